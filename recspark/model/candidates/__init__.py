"""Where list items come from besides the model (popular, trending, categories, new items), and
how each user's N rows are assembled with the business rules."""
