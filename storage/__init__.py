"""Storage: tables, engine, migrations, data access, import and export. Imports neither studio nor alignment."""
