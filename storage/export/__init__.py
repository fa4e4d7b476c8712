"""Export on the database side: planning ranges, reading them with COPY, restricting, compressing."""
