"""The warehouse's numbered SQL migrations, shipped as package data (`cbloop_migrations`)."""
