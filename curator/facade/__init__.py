"""The Database's methods by concern, as mixins that `curator.database.Database` combines:
`tenants` (tenants, sharing, API keys), `collections` (create, drop, train, snapshots,
backups), `writes` (upsert, delete, grant, revoke), `reads` (search, get, count, id pages);
`base` holds the state they share. The semantic cache's methods are curator/cache/facade.py."""
