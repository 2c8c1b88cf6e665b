"""Pure value objects describing each structure family, with their JSON forms."""
