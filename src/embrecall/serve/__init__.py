"""The online recall service: FastAPI over a bundle, a live index and the recall channels."""
