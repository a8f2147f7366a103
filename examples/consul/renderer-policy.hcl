# Least-privilege ACL policy for the switchyard renderer with the shipped
# templates (templates/*.tmpl), proven against a real Consul agent with
# default_policy = "deny" by scripts/e2e/examples_test.go
# (TestRendererACLPolicy): with a token of this policy the renderer renders
# every instance; without either rule it renders none.
#
# What the renderer asks Consul, all reads:
#   GET /v1/catalog/services          the `services` function: lists only the
#                                     services the token may read
#   GET /v1/health/service/<name>     the `service` function: instances of a
#                                     service the token may read, on nodes it
#                                     may read, with their checks
#   GET /v1/status/leader             the stale guard's leader check (no ACL)
# Consul filters what a token may not read instead of refusing it, so a
# token short of a rule does not fail: it renders a config without those
# services or instances (the stale guard holds a render that empties a
# backend, see README). Keep the rules in step with your templates.
#
#   consul acl policy create -name renderer -rules @renderer-policy.hcl
#   consul acl token create -description "renderer on $(hostname)" -policy-name renderer
#   # on the proxy host: CONSUL_HTTP_TOKEN_FILE=/etc/switchyard/consul-token
#
# To route only some services, narrow the service prefix (service_prefix
# "web-"); node reads stay needed for every node those services run on.
service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

# Your own templates may need more; add only what they call:
#   key, keyOrDefault, ls, tree        key_prefix "<path>" { policy = "read" }
#   a `deduplicate {}` stanza in --config (one renderer of many renders and
#   shares the result through Consul's KV store):
#                                      key_prefix "consul-template/dedup/" { policy = "write" }
#                                      session_prefix "" { policy = "write" }
#   nodes, node                        (covered by node_prefix above)
