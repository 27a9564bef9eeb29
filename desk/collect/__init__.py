"""`logs collect`: SD cards and recordings into the season database, with findings about what is wrong."""
