"""Durable storage on LMDB: the store, documents, collections' start-up (snapshot + replay)
and the background snapshotter."""
