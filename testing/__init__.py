"""Test equipment: real servers started on loopback, scripted fakes and simulators."""
