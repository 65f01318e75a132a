"""One ComponentResource per piece of the back end."""
