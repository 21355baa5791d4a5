# Resident mode only (contrib/consul-conf.d/resident/): give pg-role-reporter's token this
# policy as well as pg-role-reporter.hcl. The daemon then runs the checks itself and
# writes their TTL checks: updating a check needs write on the service it belongs to
# (the memory check's pg-host; pg-db is in pg-role-reporter.hcl), and lag --consul-service
# reads the leader's pg_wal_lsn from the health endpoint, which ACLs filter (not refuse)
# without node:read.
service "pg-host" {
  policy = "write"
}
node_prefix "" {
  policy = "read"
}
