"""Azure Personalizer's REST API served by cbloop (see `routes`), so Personalizer apps move over
by changing their endpoint."""
