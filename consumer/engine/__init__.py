"""The engine: `pipeline` wires the stages; admission, fates and insight move records through
them and read health from them; `process` builds one record (decode, map, normalize)."""
