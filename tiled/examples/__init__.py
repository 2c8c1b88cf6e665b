"""Example trees."""
