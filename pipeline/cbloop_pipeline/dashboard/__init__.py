"""The experiment dashboard: a read-only web app over a snapshot of the warehouse.

The learning loop owns the warehouse file (DuckDB allows one writing process). After each
cycle it publishes a copy (`snapshot.publish`) with small summary tables added; the web app
(`app.create_app`) only ever opens that copy read-only, so a page never waits for the loop and
the loop never waits for a page.
"""
