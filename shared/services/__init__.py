"""Services: traffic through Berth's proxy and replica scaling on it."""
