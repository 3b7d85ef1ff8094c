"""The CICIoMT2024 dataset: schema, label taxonomy, reader, feature scaler, synthetic generator."""
