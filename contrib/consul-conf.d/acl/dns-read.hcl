# For the anonymous token: DNS queries carry no token, so whatever DNS must answer
# (leader.pg-db.service.consul, the prepared queries) the anonymous token must read.
# Executing a prepared query needs no `query` rule (its answer is filtered by these two),
# so none is given: `query_prefix "" read` would let anyone without a token list every
# prepared query of the cluster over HTTP.
node_prefix "" {
  policy = "read"
}
service_prefix "" {
  policy = "read"
}
