# The agent's own token (acl.tokens.agent): it registers its node and keeps it in sync.
node_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "read"
}
