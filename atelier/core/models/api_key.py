from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from atelier.core.models.base import Base, UTCDateTime, new_id, utcnow


class ApiKey(Base):
    """An API key, stored as the SHA-256 of the secret; `scopes` is a list of read/submit/catalogue/admin."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Standard Webhooks signing secrets (whsec_...): kept in clear because HMAC needs them; the previous
    # one still signs for a while after a rotation.
    webhook_secret: Mapped[str | None] = mapped_column(String(64))
    webhook_secret_previous: Mapped[str | None] = mapped_column(String(64))
    webhook_secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
