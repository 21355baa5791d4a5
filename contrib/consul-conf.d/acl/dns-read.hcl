# For the anonymous token: DNS queries carry no token, so whatever DNS must answer
# (leader.pg-db.service.consul, the prepared queries) the anonymous token must read.
node_prefix "" {
  policy = "read"
}
service_prefix "" {
  policy = "read"
}
query_prefix "" {
  policy = "read"
}
