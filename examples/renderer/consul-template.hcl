# Example: an operator's existing consul-template configuration, used as is:
#   renderer --config examples/renderer/consul-template.hcl --proxy-mode supervise
#
# consul {}, wait {}, deduplicate {} and template {} stanzas are read as
# consul-template reads them. A template's command/exec is accepted but not
# run: the renderer validates the file with the proxy before it goes live,
# reloads once per batch and checks that the reload took (a warning says so).
# Relative paths are relative to this file.

consul {
  address = "127.0.0.1:8500"
  retry {
    enabled     = true
    attempts    = 0 # 0 = forever (the renderer's default too)
    max_backoff = "10s"
  }
}

wait {
  min = "100ms"
  max = "1s"
}

template {
  source      = "../../templates/nginx.conf.tmpl"
  destination = "/var/lib/switchyard/nginx/nginx.conf"
  perms       = 0644
  # Ignored with a warning: the renderer reloads nginx itself.
  command     = "nginx -s reload"
}
