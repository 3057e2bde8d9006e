"""Hash-list formats: fixtures follow the lists' published shapes (python-threatexchange's clients
and test data for NCMEC, StopNCII and TCAP; its LocalFileSignalExchangeAPI for local files)."""
from __future__ import annotations

import hashlib
import io
import json
import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.bank import formats as F
from workers.bank.formats import FormatError, HashRecord, ImportReport, InvalidLine, UnsupportedLine

PDQ = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
PDQ2 = "2afc4a5c09628a7961c14d436493bba66b89b831453baa1d556ba385554daa82"
MD5 = "cab08b36195edb1a1231d2d09fa450e0"
SHA1 = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
PHASH = "c3a5c3a5c3a5c3a5"

LOCAL = f"""\
# exported from HMA
pdq {PDQ}

video_md5 {MD5}
photo_md5 {MD5.upper()}
pdq_ocr {PDQ},text with spaces
pqd {PDQ}
md5 not-a-hash
sha256 {SHA256} trailing words
\tphash\t{PHASH}\t
video_tmk_pdqf 0123
{SHA256}
"""

CSV = f"""\
Signal,Hash,Label,Source,Note,Case
pdq,{PDQ},ncii,partner-a,"reported twice, confirmed",c-1
md5,{MD5},,,,
sha256,{SHA256[:-1]},terror,,,
photodna,AAAA,,,,
dhash,{PHASH},,,"a note
over two lines",c-2
md5,{MD5},a,b,c,d,e
"""

STOPNCII_PAGE = {
    "count": 3,
    "nextSetTimestamp": 1625175071,
    "nextPageToken": "W3siY29tcG9zaXRlVG9rZW4i",
    "hasMoreRecords": True,
    "hashRecords": [
        {
            "lastModtimestamp": 1625167804,
            "hashValue": PDQ2,
            "hashStatus": "Received",
            "caseNumbers": {"27664732-76e1-4a17-8099-455798e67022": "Received"},
            "signalType": "ImagePDQ",
        },
        {
            "lastModtimestamp": 1625175071,
            "hashValue": PDQ,
            "hashStatus": "Active",
            "caseNumbers": {"cc592711-7068-442f-b5d2-24d50d389751": "Active"},
            "signalType": "ImagePDQ",
            "hashRegions": ["UK"],
            "CSPFeedbacks": [{"source": "Facebook", "feedbackValue": "Blocked", "tags": ["Nude", "Objectionable"]}],
        },
        {"lastModtimestamp": 1, "hashValue": MD5, "hashStatus": "Withdrawn", "caseNumbers": {}, "signalType": "VideoMD5"},
        {"lastModtimestamp": 2, "hashValue": "AAAA", "hashStatus": "Active", "caseNumbers": {}, "signalType": "VideoTMK"},
        {"lastModtimestamp": 3, "hashValue": "12ab", "hashStatus": "Active", "caseNumbers": {}, "signalType": "ImagePDQ"},
        {"lastModtimestamp": 4, "hashValue": MD5, "hashStatus": "Active", "caseNumbers": [], "signalType": "VideoMD5"},
    ],
}

NCMEC_XML = f"""\
<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2">
    <images count="3" maxTimestamp="2017-10-24T15:10:00Z">
        <image>
            <member id="42">Example Member</member>
            <timestamp>2017-10-24T15:00:00Z</timestamp>
            <id>image1</id>
            <classification>A1</classification>
            <fingerprints>
                <md5>{MD5}</md5>
                <sha1>{SHA1}</sha1>
                <pdna>a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1...</pdna>
                <pdq>{PDQ}</pdq>
            </fingerprints>
            <feedback lastUpdateTimestamp="2023-06-01T12:48:14Z">
                <affirmativeFeedback type="Md5" lastUpdateTimestamp="2023-06-01T12:48:14Z">
                <members timestamp="2023-06-01T12:48:14Z">
                    <member id="42">Example Member</member>
                </members>
                </affirmativeFeedback>
            </feedback>
        </image>
        <deletedImage>
            <member id="43">Example Member2</member>
            <id>image4</id>
            <timestamp>2017-10-24T15:10:00Z</timestamp>
        </deletedImage>
    </images>
    <videos count="1" maxTimestamp="2019-11-24T15:10:00Z">
        <video>
            <member id="101">TX Example</member>
            <timestamp>2019-11-24T15:10:00Z</timestamp>
            <id>largetags</id>
            <classification>A2</classification>
            <fingerprints>
                <md5>facefacefacefacefacefacefaceface</md5>
                <sha1>nothex</sha1>
                <tmk-pdqf rel="self" href="/v2/entries/1/fingerprints/TMK_PDQF"/>
                <videntifier rel="self" href="/v2/entries/1/fingerprints/VIDENTIFIER"/>
            </fingerprints>
        </video>
    </videos>
    <paging>
        <next>/v2/entries?from=2017-10-20T00%3A00%3A00.000Z&amp;to=2017-10-30T00%3A00%3A00.000Z&amp;start=2001</next>
    </paging>
</queryResult>
"""

TAT_ENTRIES = [
    {"id": 2819, "hash_digest": MD5, "algorithm": "MD5", "ideology": "islamist", "file_type": "mp4",
     "deleted": False, "updated_on": 1704901040.222779, "created_on": "2025-03-03 23:05:22,587"},
    {"id": 2821, "hash_digest": PDQ, "algorithm": "PDQ", "ideology": "far-right", "file_type": "gif",
     "deleted": False, "updated_on": 1704901040.25555, "created_on": "2025-03-03 23:05:22,587"},
    {"id": 2822, "hash_digest": SHA256, "algorithm": "SHA256", "ideology": "islamist", "file_type": "pdf",
     "deleted": False, "updated_on": 1704901041.0, "created_on": "2025-03-03 23:05:22,587"},
    {"id": 2823, "hash_digest": "ab" * 64, "algorithm": "SHA512", "ideology": "islamist", "file_type": "pdf",
     "deleted": False, "updated_on": 1704901042.0, "created_on": "2025-03-03 23:05:22,587"},
    {"id": 2824, "hash_digest": MD5, "algorithm": "MD5", "ideology": "islamist", "file_type": "mp4",
     "deleted": True, "updated_on": 1704901043.0, "created_on": "2025-03-03 23:05:22,587"},
    {"id": 2825, "hash_digest": "zz", "algorithm": "PDQ", "ideology": "islamist", "file_type": "png",
     "deleted": False, "updated_on": 1704901044.0, "created_on": "2025-03-03 23:05:22,587"},
]


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_record_per_line(entries: list) -> str:
    """A JSON array with one entry per line: entry i is on line i + 2."""
    return "[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n"


def by_type(items):
    records = [i for i in items if isinstance(i, HashRecord)]
    invalid = [i for i in items if isinstance(i, InvalidLine)]
    unsupported = [i for i in items if isinstance(i, UnsupportedLine)]
    assert len(records) + len(invalid) + len(unsupported) == len(items)
    return records, invalid, unsupported


# --- local -------------------------------------------------------------------------------------


def test_local_reads_hma_lines_with_line_numbers(tmp_path):
    records, invalid, unsupported = by_type(list(F.read_all(write(tmp_path, "bank.txt", LOCAL), "local")))
    assert [(r.line, r.signal, r.value) for r in records] == [
        (2, "pdq", PDQ), (4, "md5", MD5), (5, "md5", MD5), (10, "phash", PHASH),
    ]
    assert [(b.line, b.reason) for b in invalid] == [
        (7, "unknown signal 'pqd'"),
        (8, "md5 hash must be 32 hex characters, got 10"),
        (9, "unexpected text after the hash"),
        (12, "expected '<signal> <hash>'"),
    ]
    assert [(u.line, u.kind) for u in unsupported] == [(6, "pdq_ocr"), (11, "video_tmk_pdqf")]
    assert invalid[1].text == "md5 not-a-hash"


def test_local_bare_hashes_take_the_named_signal(tmp_path):
    path = write(tmp_path, "md5s.txt", f"{MD5}\n\n{MD5.upper()}\nnope\n")
    items = list(F.read_all(path, "local", default_signal="video_md5"))
    assert [(i.line, i.value) for i in items if isinstance(i, HashRecord)] == [(1, MD5), (3, MD5)]
    assert [i.line for i in items if isinstance(i, InvalidLine)] == [4]
    with pytest.raises(ValueError):
        list(F.read_all(path, "local", default_signal="bogus"))


def test_local_accepts_text_file_objects():
    items = list(F.parse_local(io.StringIO(f"sha1 {SHA1}\n")))
    assert items == [HashRecord("sha1", SHA1, line=1)]


def test_parsing_leaves_the_callers_binary_file_open():
    f = io.BytesIO(f"pdq {PDQ}\n".encode())
    assert [r.value for r in F.parse(f, "local")] == [PDQ]
    assert not f.closed
    partial = F.parse(io.BytesIO(b"signal,hash\n" + f"md5,{MD5}\n".encode() * 3), "csv")
    next(partial)
    partial.close()  # a consumer that stops early


# --- csv ---------------------------------------------------------------------------------------


def test_csv_columns_extra_and_line_numbers(tmp_path):
    records, invalid, unsupported = by_type(list(F.read_all(write(tmp_path, "list.csv", CSV))))
    assert records[0] == HashRecord("pdq", PDQ, "ncii", "partner-a", "reported twice, confirmed", {"case": "c-1"}, 2)
    assert records[1] == HashRecord("md5", MD5, line=3)
    # the quoted note spans lines 6-7: the record is numbered with the line it ends on
    assert records[2] == HashRecord("dhash", PHASH, note="a note\nover two lines", extra={"case": "c-2"}, line=7)
    assert [(b.line, b.reason) for b in invalid] == [
        (4, "sha256 hash must be 64 hex characters, got 63"),
        (8, "row has 7 fields, the header 6"),
    ]
    assert [(u.line, u.kind) for u in unsupported] == [(5, "photodna")]


def test_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffsignal,hash\r\n".encode() + f"md5,{MD5}\r\n".encode())
    assert list(F.read_all(path)) == [HashRecord("md5", MD5, line=2)]
    assert [r.value for r in F.parse_csv(io.StringIO(path.read_text(encoding="utf-8")))] == [MD5]


def test_csv_without_hash_column_is_not_a_hash_list(tmp_path):
    path = write(tmp_path, "people.csv", "name,email\nann,a@example.org\n")
    with pytest.raises(FormatError) as err:
        list(F.read_all(path))
    assert err.value.line == 1


def test_runaway_csv_quote_is_a_format_error_not_a_memory_hog():
    """An unbalanced quote would swallow the rest of the file into one cell: csv's field limit stops it."""
    text = f"signal,hash\nmd5,{MD5}\nmd5,\"{MD5}\n" + f"md5,{MD5}\n" * 5000
    items = F.parse(io.BytesIO(text.encode()), "csv")
    assert next(items) == HashRecord("md5", MD5, line=2)
    with pytest.raises(FormatError) as err:
        next(items)
    assert err.value.line > 3 and "field larger than field limit" in str(err.value)


def test_csv_header_aliases_and_default_signal(tmp_path):
    path = write(tmp_path, "alias.csv", f"signal_type,hash_value\nvideo_md5,{MD5}\n")
    assert [r.key()[:2] for r in F.read_all(path)] == [("md5", MD5)]
    bare = write(tmp_path, "bare.csv", f"hash,label\n{PDQ},x\n")
    assert list(F.read_all(bare, default_signal="pdq")) == [HashRecord("pdq", PDQ, "x", line=2)]
    with pytest.raises(FormatError):
        list(F.read_all(bare))


# --- stopncii ----------------------------------------------------------------------------------


def test_stopncii_page_maps_types_and_skips_removals(tmp_path):
    page = dict(STOPNCII_PAGE)
    text = json.dumps({k: v for k, v in page.items() if k != "hashRecords"})[:-1]
    text += ', "hashRecords": ' + one_record_per_line(page["hashRecords"]) + "}"
    records, invalid, unsupported = by_type(list(F.read_all(write(tmp_path, "stopncii.json", text))))
    # entry i of hashRecords sits on line i + 2
    assert [(r.line, r.signal, r.value) for r in records] == [(2, "pdq", PDQ2), (3, "pdq", PDQ), (7, "md5", MD5)]
    assert records[1].source == "stopncii"
    assert records[1].extra == {
        "hash_status": "Active", "last_modified": "1625175071", "cases": "1", "regions": "UK",
        "feedback": "Facebook:Blocked", "tags": "Nude,Objectionable",
    }
    assert [(u.line, u.kind) for u in unsupported] == [(4, "withdrawn"), (5, "VideoTMK")]
    assert [(b.line, b.reason) for b in invalid] == [(6, "pdq hash must be 64 hex characters, got 4")]


def test_stopncii_json_lines_of_pages_and_bare_arrays(tmp_path):
    second = {**STOPNCII_PAGE, "hasMoreRecords": False, "hashRecords": STOPNCII_PAGE["hashRecords"][:2]}
    path = write(tmp_path, "pages.jsonl", json.dumps(STOPNCII_PAGE) + "\n" + json.dumps(second) + "\n")
    records = [i for i in F.read_all(path, "stopncii") if isinstance(i, HashRecord)]
    assert [(r.line, r.value) for r in records] == [(1, PDQ2), (1, PDQ), (1, MD5), (2, PDQ2), (2, PDQ)]
    bare = write(tmp_path, "records.json", json.dumps(STOPNCII_PAGE["hashRecords"][:2]))
    assert [r.value for r in F.read_all(bare, "stopncii")] == [PDQ2, PDQ]
    records_jsonl = write(tmp_path, "records.jsonl", "\n".join(json.dumps(r) for r in STOPNCII_PAGE["hashRecords"][:2]))
    assert [(r.line, r.value) for r in F.read_all(records_jsonl, "stopncii")] == [(1, PDQ2), (2, PDQ)]


def test_broken_json_is_a_format_error_with_its_line(tmp_path):
    path = write(tmp_path, "broken.json", '{"hashRecords": [\n{"signalType": "ImagePDQ", "hashValue": "x"},\n{"signalType": ,\n"hashValue": "y"}]}\n')
    with pytest.raises(FormatError) as err:
        list(F.read_all(path, "stopncii"))
    assert err.value.line == 3


def test_large_json_streams_across_read_chunks(tmp_path):
    rng = random.Random(7)
    recs = [
        {"signalType": "ImagePDQ", "hashValue": f"{rng.getrandbits(256):064x}", "hashStatus": "Active",
         "caseNumbers": {f"case-{i}": "Active"}, "lastModtimestamp": 10 ** 12 + i}
        for i in range(3000)
    ]
    expected = [r["hashValue"] for r in recs]
    pretty = write(tmp_path, "pretty.json", json.dumps({"count": len(recs), "hashRecords": recs}, indent=2))
    got = [r for r in F.read_all(pretty, "stopncii")]
    assert [r.value for r in got] == expected
    # each record starts on the line json.dumps(indent=2) put its brace on
    lines = pretty.read_text().splitlines()
    assert all(lines[r.line - 1].strip() == "{" for r in got)
    assert all(r.extra["last_modified"] == str(10 ** 12 + i) for i, r in enumerate(got))
    one_line = write(tmp_path, "oneline.json", json.dumps({"count": len(recs), "hashRecords": recs, "hasMoreRecords": False}))
    assert [(r.line, r.value) for r in F.read_all(one_line, "stopncii")] == [(1, v) for v in expected]


# --- ncmec -------------------------------------------------------------------------------------


def test_ncmec_fingerprints_with_element_lines(tmp_path):
    path = write(tmp_path, "ncmec.xml", NCMEC_XML)
    records, invalid, unsupported = by_type(list(F.read_all(path)))
    assert [(r.line, r.signal, r.value, r.label) for r in records] == [
        (10, "md5", MD5, "A1"), (11, "sha1", SHA1, "A1"), (13, "pdq", PDQ, "A1"),
        (36, "md5", "facefacefacefacefacefacefaceface", "A2"),
    ]
    assert records[0].source == "ncmec"
    assert records[0].extra == {
        "ncmec_id": "image1", "media": "image", "member_id": "42", "member": "Example Member",
        "timestamp": "2017-10-24T15:00:00Z",
    }
    assert records[3].extra["media"] == "video"
    assert [(u.line, u.kind) for u in unsupported] == [(12, "pdna"), (23, "deleted"), (38, "tmk-pdqf"), (39, "videntifier")]
    assert [(b.line, b.reason) for b in invalid] == [(37, "sha1 hash must be 40 hex characters, got 6")]


def test_ncmec_refuses_dtds_and_reports_broken_xml(tmp_path):
    bomb = '<?xml version="1.0"?>\n<!DOCTYPE q [<!ENTITY a "aaaa">]>\n<queryResult>&a;</queryResult>\n'
    with pytest.raises(FormatError):
        list(F.read_all(write(tmp_path, "dtd.xml", bomb), "ncmec"))
    broken = NCMEC_XML.replace("</fingerprints>\n        </video>", "</video>")
    with pytest.raises(FormatError) as err:
        list(F.read_all(write(tmp_path, "broken.xml", broken), "ncmec"))
    assert err.value.line == 40  # the mismatched </video>


def test_ncmec_large_file_streams(tmp_path):
    n = 5000
    body = "".join(
        f"<image><member id=\"1\">m</member><id>i{i}</id><fingerprints>\n<md5>{i:032x}</md5>\n</fingerprints></image>\n"
        for i in range(n)
    )
    path = write(tmp_path, "big.xml", f'<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2"><images>\n{body}</images></queryResult>')
    records = list(F.read_all(path, "ncmec"))
    assert [(r.line, r.value, r.extra["ncmec_id"]) for r in records] == [(3 + 3 * i, f"{i:032x}", f"i{i}") for i in range(n)]


# --- tat ---------------------------------------------------------------------------------------


def test_tat_page_and_bare_list(tmp_path):
    page = '{"count": 6, "next": null, "previous": null, "checkpoint": "1724856487.709035,10594",\n"results": ' + one_record_per_line(TAT_ENTRIES) + "}"
    records, invalid, unsupported = by_type(list(F.read_all(write(tmp_path, "tat.json", page))))
    # results entry i sits on line i + 3
    assert [(r.line, r.signal, r.value, r.label) for r in records] == [
        (3, "md5", MD5, "islamist"), (4, "pdq", PDQ, "far-right"), (5, "sha256", SHA256, "islamist"),
    ]
    assert records[0].source == "tat"
    assert records[0].extra == {
        "id": "2819", "ideology": "islamist", "file_type": "mp4",
        "created_on": "2025-03-03 23:05:22,587", "updated_on": "1704901040.222779",
    }
    assert [(u.line, u.kind) for u in unsupported] == [(6, "SHA512"), (7, "deleted")]
    assert [(b.line, b.reason) for b in invalid] == [(8, "pdq hash must be 64 hex characters, got 2")]
    bare = write(tmp_path, "tat-list.json", json.dumps(TAT_ENTRIES[:2]))
    assert [r.value for r in F.read_all(bare)] == [MD5, PDQ]


def test_json_values_that_are_not_records_are_invalid(tmp_path):
    path = write(tmp_path, "odd.json", '[\n{"hash_digest": "x"},\n42\n]')
    items = list(F.read_all(path, "tat"))
    assert [(i.line, type(i).__name__) for i in items] == [(2, "InvalidLine"), (3, "InvalidLine")]


# --- round trips -------------------------------------------------------------------------------


FIXTURES = [
    ("local", "list.txt", LOCAL),
    ("csv", "list.csv", CSV),
    ("stopncii", "stopncii.json", json.dumps(STOPNCII_PAGE)),
    ("ncmec", "ncmec.xml", NCMEC_XML),
    ("tat", "tat.json", json.dumps(TAT_ENTRIES)),
]


@pytest.mark.parametrize("fmt,name,text", FIXTURES)
def test_every_format_round_trips_through_local_and_csv(tmp_path, fmt, name, text):
    records = [i for i in F.read_all(write(tmp_path, name, text), fmt) if isinstance(i, HashRecord)]
    assert records

    local = io.StringIO()
    assert F.write_local(records, local) == len(records)
    again = list(F.parse_local(io.StringIO(local.getvalue())))
    assert [(r.signal, r.value) for r in again] == [(r.signal, r.value) for r in records]

    extra_columns = sorted({k for r in records for k in r.extra})
    out = io.StringIO()
    assert F.write_csv(records, out, extra_columns) == len(records)
    path = write(tmp_path, "export.csv", out.getvalue())
    assert F.detect_format(path) == "csv"
    assert [r.key() for r in F.read_all(path)] == [r.key() for r in records]


_cells = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30).map(
    lambda t: t.strip() or None
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["pdq", "md5", "sha1", "phash"]), st.binary(min_size=32, max_size=32),
                          _cells, _cells, _cells, _cells), max_size=8))
def test_csv_round_trips_arbitrary_text(rows):
    length = {"pdq": 32, "md5": 16, "sha1": 20, "phash": 8}
    records = [
        HashRecord(sig, raw[: length[sig]].hex().ljust(length[sig] * 2, "0"), label, source, note,
                   {"case": case} if case else {})
        for sig, raw, label, source, note, case in rows
    ]
    out = io.StringIO()
    F.write_csv(records, out, ["case"])
    assert [r.key() for r in F.parse_csv(io.StringIO(out.getvalue()))] == [r.key() for r in records]


# --- detection, report, ids, memory ------------------------------------------------------------


@pytest.mark.parametrize("fmt,name,text", FIXTURES)
def test_detect_format_by_extension_and_content(tmp_path, fmt, name, text):
    assert F.detect_format(write(tmp_path, name, text)) == fmt
    assert F.detect_format(write(tmp_path, "no-extension", text)) == fmt


def test_detect_format_refuses_what_it_cannot_tell(tmp_path):
    with pytest.raises(FormatError):
        F.detect_format(write(tmp_path, "other.json", '{"hello": 1}'))
    with pytest.raises(FormatError):
        F.detect_format(write(tmp_path, "empty.txt", "# nothing\n\n"))


def test_report_counts_everything_and_iter_records_fills_it(tmp_path):
    path = write(tmp_path, "bank.txt", LOCAL)
    report = F.scan(path)
    assert report.records == 4 and dict(report.per_signal) == {"pdq": 1, "md5": 2, "phash": 1}
    assert report.invalid_count == 4 and [b.line for b in report.invalid] == [7, 8, 9, 12]
    assert dict(report.unsupported) == {"pdq_ocr": 1, "video_tmk_pdqf": 1}
    assert not report.ok
    assert "line 7: unknown signal 'pqd'" in "\n".join(report.lines())
    assert json.loads(json.dumps(report.to_json()))["per_signal"]["md5"] == 2

    second = ImportReport()
    loaded = list(F.iter_records(path, report=second))
    assert [r.line for r in loaded] == [2, 4, 5, 10]
    assert second == report
    assert F.scan(write(tmp_path, "good.txt", f"pdq {PDQ}\n")).ok


def test_report_keeps_a_bounded_number_of_invalid_lines(tmp_path):
    path = write(tmp_path, "bad.txt", "md5 nope\n" * 3000)
    report = F.scan(path, "local")
    assert report.invalid_count == 3000
    assert len(report.invalid) == 1000 and report.invalid[-1].line == 1000


def test_entry_id_agrees_with_the_store_formula():
    assert F.entry_id_for("pdq", PDQ) == "h-" + hashlib.sha256(f"pdq:{PDQ}".encode()).hexdigest()[:16]


def _generated(path, n: int, fmt: str) -> None:
    """n hashes in `fmt`; JSON as one single-line page, the hardest case for a streaming reader."""
    rng = random.Random(1)
    values = (f"{rng.getrandbits(256):064x}" for _ in range(n))
    with open(path, "w") as f:
        if fmt == "local":
            f.writelines(f"pdq {v}\n" for v in values)
        elif fmt == "csv":
            f.write("signal,hash,label\n")
            f.writelines(f"pdq,{v},l{i % 7}\n" for i, v in enumerate(values))
        elif fmt == "stopncii":
            f.write('{"count": %d, "hashRecords": [' % n)
            f.write(",".join(json.dumps({"signalType": "ImagePDQ", "hashValue": v, "hashStatus": "Active"}) for v in values))
            f.write('], "hasMoreRecords": false}')
        elif fmt == "ncmec":
            f.write('<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2"><images>\n')
            f.writelines(
                f"<image><member id=\"1\">m</member><id>i{i}</id><fingerprints><pdq>{v}</pdq></fingerprints></image>\n"
                for i, v in enumerate(values)
            )
            f.write("</images></queryResult>\n")


# tracemalloc slows allocation-heavy code several times over: sizes keep this test to seconds.
@pytest.mark.parametrize("fmt,n", [("local", 200_000), ("csv", 50_000), ("stopncii", 30_000), ("ncmec", 30_000)])
def test_parsing_large_files_keeps_memory_bounded(tmp_path, fmt, n):
    path = tmp_path / f"big.{fmt}"
    _generated(path, n, fmt)
    size = path.stat().st_size
    assert size > 3_000_000
    tracemalloc.start()
    try:
        report = F.scan(path, fmt)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.records == n and report.ok
    assert peak < 1_000_000, f"peak {peak} bytes while parsing a {size}-byte file"
