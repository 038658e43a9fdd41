"""Simulators of hosted mail APIs that cannot run here, written from their public references."""
