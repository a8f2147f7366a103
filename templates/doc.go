// Package templates holds the proxy config templates Switchyard ships
// (nginx.conf.tmpl, haproxy.cfg.tmpl) and their golden tests, which render
// each template on a seeded consul-template Brain and run the real proxy's
// config check on the result.
package templates
