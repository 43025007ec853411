"""README's picture and table, regenerated from a demo run (`make readme` runs the demo, then this).

    .venv/bin/python docs/readme_assets.py           # rewrite README's demo section and docs/images/demo-confusion-trw.png
    .venv/bin/python docs/readme_assets.py --check   # exit 1 when README's tables differ in structure from the output

Reads what `unlearn-grid tables demo --out unlearn-grid/tables/demo` and `unlearn-grid figures demo --out
unlearn-grid/figures/demo` wrote (relative to the working folder; --tables, --figures to change). Writing:
the part of README between the markers DEMO_START and DEMO_END becomes the accuracy and MIA-NN tables
with a caption each, and the TRW confusion figure is copied, downscaled, to docs/images/. Checking: README's
tables must have the fresh tables' header and row labels (their first cells), in the same order; the
numbers may differ in the last digit between machines, so they are not compared. Nothing is written.
Exit codes: 0 done / same structure, 1 the structure differs (each difference printed), 2 missing input.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
IMAGE = ROOT / "docs" / "images" / "demo-confusion-trw.png"
FIGURE_GLOB = "confusion_*_trw.png"          # Original | TRW | Retrain on the first forget class
IMAGE_WIDTH = 900                            # pixels; the figure is written at 1300
DEMO_START = "<!-- demo-table:start -->"
DEMO_END = "<!-- demo-table:end -->"
# (file under the tables folder, caption written above it in README, how many leading columns label a row,
# which rows README shows: None = all, else a (column, value) its rows have)
TABLES = (
    ("accuracy.md", "**Accuracy and SVM-MIA** (%, the paper's Table 2 layout; mean ± sample std over the 2 seeds, "
                    "each seed's value the mean over its 3 forget classes; [95% bootstrap interval] over the 6 "
                    "(seed, forget class) units, SVM-MIA's also resampling the test samples; n = units; "
                    "`Avg gap`: mean |difference to Retrain|):", 1, None),
    ("mia_nn.md", "**MIA-NN** (%, the paper's Table 1 numbers over all 3 forget classes; Retrain = A_c\\*, the "
                  "reference: closer to it is better; Retrain (held-out): each Retrain model against the other's "
                  "reference, the noise floor; MIA-NN gap = |MIA-NN − A_c\\*|; JS to Retrain: Jensen–Shannon "
                  "divergence (bits) of the predictions on forget samples; `tables` also writes one row per forget "
                  "class):", 4, (1, "all")),
)


def markdown_tables(text):
    """The markdown tables of `text`, each a list of rows, each row a list of its cells (stripped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.strip().startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def structure(table, label_columns=1):
    """(header, row labels): what must not change between machines. A row's label is its first
    `label_columns` cells; the separator row is skipped."""
    body = [row for row in table[1:] if not all(set(cell) <= set("-: ") for cell in row)]
    return table[0], [" / ".join(row[:label_columns]) for row in body]


def shown(text, rows):
    """The markdown table `text` with only the rows README shows (header and separator kept): rows None
    keeps all, else (column, value) the rows whose cell in that column is value."""
    if rows is None:
        return text.strip()
    lines = text.strip().splitlines()
    column, value = rows
    kept = [line for line in lines[2:] if line.strip().strip("|").split("|")[column].strip() == value]
    return "\n".join(lines[:2] + kept)


def demo_section(tables_dir):
    parts = [DEMO_START,
             "<!-- written by docs/readme_assets.py from `make demo`'s output (`make readme`); edit that script, not this -->"]
    for name, caption, _, rows in TABLES:
        parts += ["", caption, "", shown((tables_dir / name).read_text(), rows)]
    return "\n".join(parts + ["", DEMO_END])


def readme_section(text):
    """README's text between the markers, or None when they are missing or out of order."""
    start, end = text.find(DEMO_START), text.find(DEMO_END)
    if start < 0 or end < start:
        return None
    return text[start:end + len(DEMO_END)]


def differences(readme_text, tables_dir):
    """Lines saying how README's demo tables differ in structure from the fresh ones; [] when they agree."""
    section = readme_section(readme_text)
    if section is None:
        return [f"README has no section between {DEMO_START} and {DEMO_END}"]
    ours = markdown_tables(section)
    fresh = [markdown_tables(shown((tables_dir / name).read_text(), rows))[0] for name, _, _, rows in TABLES]
    if len(ours) != len(fresh):
        return [f"README's demo section has {len(ours)} tables, the demo wrote {len(fresh)}"]
    found = []
    for (name, _, label_columns, _), mine, theirs in zip(TABLES, ours, fresh):
        (header, labels), (fresh_header, fresh_labels) = structure(mine, label_columns), structure(theirs, label_columns)
        if header != fresh_header:
            found.append(f"{name}: header differs\n  README: {' | '.join(header)}\n  fresh:  {' | '.join(fresh_header)}")
        if labels != fresh_labels:
            found.append(f"{name}: row labels differ\n  README: {labels}\n  fresh:  {fresh_labels}")
    return found


def write_image(figures_dir):
    from PIL import Image
    found = sorted(figures_dir.glob(FIGURE_GLOB))
    if not found:
        raise FileNotFoundError(f"no {FIGURE_GLOB} in {figures_dir}: run `unlearn-grid figures demo --out {figures_dir}`")
    with Image.open(found[0]) as image:
        image = image.convert("RGB")
        if image.width > IMAGE_WIDTH:
            image = image.resize((IMAGE_WIDTH, round(image.height * IMAGE_WIDTH / image.width)), Image.LANCZOS)
        # a palette of 128 colours keeps the figure (white, blues, black text) and a third of the bytes
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(IMAGE, optimize=True)
    return found[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=Path, default=Path("unlearn-grid/tables/demo"))
    parser.add_argument("--figures", type=Path, default=Path("unlearn-grid/figures/demo"))
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="compare README's tables' structure; write nothing")
    args = parser.parse_args(argv)
    missing = [str(args.tables / name) for name, *_ in TABLES if not (args.tables / name).is_file()]
    if missing:
        print(f"error: missing {', '.join(missing)}: run `make demo` (it writes them) first", file=sys.stderr)
        return 2
    text = args.readme.read_text()
    if args.check:
        found = differences(text, args.tables)
        for line in found:
            print(line)
        if not IMAGE.is_file():
            found.append(f"missing {IMAGE.relative_to(ROOT)}")
            print(found[-1])
        print(f"README's demo tables {'differ from' if found else 'have the structure of'} {args.tables}")
        return 1 if found else 0
    section = readme_section(text)
    if section is None:
        print(f"error: {args.readme} has no section between {DEMO_START} and {DEMO_END}", file=sys.stderr)
        return 2
    try:
        source = write_image(args.figures)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.readme.write_text(text.replace(section, demo_section(args.tables)))
    print(f"wrote {args.readme} (tables from {args.tables}) and {IMAGE.relative_to(ROOT)} (from {source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
