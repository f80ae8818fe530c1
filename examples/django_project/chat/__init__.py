"""The chat app: rooms of logged-in users, messages kept in the database."""
