# pg-role-reporter's token: the one policy it needs (its man page and the READMEs point here).
# Tag and Meta of its own service instance:
service "pg-db" {
  policy = "write"
}
# The leader lock: a KV key under service/pg-db/ held with a session.
key_prefix "service/pg-db/" {
  policy = "write"
}
session_prefix "" {
  policy = "write"
}
# Read every instance of pg-db and its node: without it Consul filters them out of the
# answers and the split-brain guard is blind (the reporter then refuses the leader tag).
node_prefix "" {
  policy = "read"
}
