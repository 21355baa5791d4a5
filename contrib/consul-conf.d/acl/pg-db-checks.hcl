# The token the agent's script checks use (CONSUL_HTTP_TOKEN_FILE in the agent's
# environment): consul-role reads its own service, the others and the leader lock.
service "pg-db" {
  policy = "read"
}
key_prefix "service/pg-db/" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
