"""The declarative catalogue: schemas/, topics/, sinks/, workers/."""

from sinkfleet.catalogue.loader import Catalogue, Column, Sink, load_catalogue

__all__ = ["Catalogue", "Column", "Sink", "load_catalogue"]
