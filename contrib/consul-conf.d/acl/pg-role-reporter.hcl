# pg-role-reporter's token: the one policy it needs (its man page and the READMEs point here).
# Tag and Meta of its own service instance:
service "pg-db" {
  policy = "write"
}
# The leader lock (the fence): the KV key service/pg-db/leader, acquired with a session
# on this host's node. Nothing else: the fence reads the lock, not the catalog, so no
# node:read (unless --lock-datacenter names another datacenter, whose session is held on
# one of its nodes: then add node_prefix "" { policy = "read" }).
key_prefix "service/pg-db/" {
  policy = "write"
}
session_prefix "" {
  policy = "write"
}
