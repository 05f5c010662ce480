"""The demo helpdesk: Trailhead Outfitters' catalogue and customers (data files here)."""

from __future__ import annotations

from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from apps.support.catalogue_formats import CatalogueFormat, ImportReport, import_catalogue
from apps.support.models import Customer

DEMO_DIR = Path(__file__).resolve().parent
CATALOGUE = DEMO_DIR / "catalogue.yaml"
CUSTOMERS = DEMO_DIR / "customers.yaml"


def load_demo(session: Session) -> ImportReport:
    """Import the demo catalogue (merge) and upsert the demo customers; flushes, no commit."""
    report = import_catalogue(
        session, CATALOGUE.read_bytes(), CatalogueFormat.YAML, source=CATALOGUE.name
    )
    for record in yaml.safe_load(CUSTOMERS.read_text())["customers"]:
        customer = session.scalars(
            select(Customer).where(Customer.external_id == record["external_id"])
        ).first()
        if customer is None:
            customer = Customer(external_id=record["external_id"])
            session.add(customer)
        customer.name, customer.attributes = record["name"], dict(record.get("attributes", {}))
    session.flush()
    return report
