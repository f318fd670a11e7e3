"""Operations: logging, keys, metrics, health, CDRs."""
