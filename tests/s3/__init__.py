"""S3 integration tests (a package so tests can import the server helper from conftest)."""
