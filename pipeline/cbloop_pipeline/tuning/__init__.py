"""Policy search (candidate learning settings scored off-policy) and feature evaluation."""
