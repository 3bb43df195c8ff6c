"""The note classifier behind the evaluation's PIS/IIS, PKID/IKID and default FAD embedding."""
