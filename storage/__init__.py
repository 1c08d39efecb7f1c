"""Storage: SQLModel tables, engine and migrations, data access, import and export. Imports neither studio nor alignment."""
