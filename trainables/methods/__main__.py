"""`python -m trainables.methods`: rewrite specs.json from the method modules (after editing a method)."""
import json

from trainables import methods

specs = methods.specs()
methods.SPECS_FILE.write_text(json.dumps(specs, indent=1) + "\n")
print(f"wrote {methods.SPECS_FILE}: {len(specs['methods'])} methods")
