# Least-privilege ACL policy for the switchyard registrar, proven against a
# real Consul agent with default_policy = "deny" by
# TestLeastPrivilegePolicyCoversEveryCall (registrar/internal/consul: every
# call, up to the catalog) and TestACLLeastPrivilegePolicy (registrar: the
# binary registers, drains and deregisters containers with this token).
#
# Everything the registrar does goes through the local agent's
# /v1/agent/service* and /v1/agent/check* endpoints:
#   list its services (filtered by its ownership meta), read one service
#   and its checks before a write, register and deregister services and
#   their checks, remove stale checks, update the TTL check that mirrors
#   a Docker HEALTHCHECK, and put services into or out of maintenance
#   (drain, `registrar drain` / `registrar undrain`).
# All of them need service:write (which includes service:read) on the
# service's name and nothing else: no node, agent, key or operator rule.
# The node name comes from Docker (or --node-name), not from Consul.
#
#   consul acl policy create -name registrar -rules @registrar-policy.hcl
#   consul acl token create -description "registrar on $(hostname)" -policy-name registrar
#
# Narrow the prefix if your services share one (service_prefix "web-"):
# a container asking for a name outside it is refused by Consul (a 403
# logged for that container, retried with backoff) and the rest go on.
service_prefix "" {
  policy = "write"
}
