"""contact-center: live monitoring and analytics for contact centers."""

__version__ = "0.1.0"
