"""File I/O every part shares: atomic writes that honour the umask, media writers."""
