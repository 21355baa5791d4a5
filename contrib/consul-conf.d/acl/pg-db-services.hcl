# The token in pg-db.json and mem-check.json: the agent registers the services with it.
service "pg-db" {
  policy = "write"
}
service "pg-host" {
  policy = "write"
}
