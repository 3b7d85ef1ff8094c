"""mcu-ids: a network intrusion detector for microcontrollers in medical IoT devices."""

__version__ = "0.1.0"
