"""Autobahn-testsuite case categories, reproduced with our own raw-frame client."""
