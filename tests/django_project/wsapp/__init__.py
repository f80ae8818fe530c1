"""The test project's app: rooms and notes (ORM from callbacks), a demo user from a migration."""
