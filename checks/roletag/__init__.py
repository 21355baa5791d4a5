"""The role-tag decision, in one pure package: which tag and Meta the service should carry
(plan), who may carry the leader tag (fencing: the Consul KV lock), and whether the tag
tells the truth (verdict: the consul-role check).

The daemon (checks/reporter/) acts on these decisions and the check
(checks/postgres/commands/consul_role.py) reports them; both depend on this package and
never on each other. It imports the standard library only, so every consul-role run and
the daemon can load it for nothing.
"""
