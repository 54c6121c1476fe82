"""Deterministic sample-data generator for the operational database of a B2B pharmacy distributor.

Why it exists: the warehouse pipeline (dlt -> bronze -> dbt silver/gold) needs a realistic *source* system
to extract from, including the awkward parts of real life: late-arriving updates, hard deletes, price
history and status lifecycles. Everything derives from a seed and a simulated clock, never from now(),
so two runs with the same inputs produce byte-identical tables and tests can compare md5 digests.

`generate` builds the world up to `as_of`; `advance_day` moves the simulated clock forward one day at a
time. The seed and the clock live in the `generator_state` table of the operational database itself, so
`advance_day` works from a fresh process. The per-day random stream is derived from (seed, day), which
makes `advance_day(days=2)` identical to two `advance_day()` calls.

Rows are streamed to PostgreSQL with COPY in bounded chunks; only small per-product and per-customer
lookup arrays are kept in memory, so tens of millions of order lines are possible.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import io
import json
import math
import queue
import random
import sys
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras

Progress = Callable[[str, int], None]

SCHEMA_FILE = Path(__file__).with_name("schema.sql")
TABLES = ("suppliers", "customers", "products", "pricing", "inventory", "orders", "order_items")
STATE_TABLE = "generator_state"
CHUNK_ROWS = 50_000
DAY = 86_400
HOUR = 3_600
EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class Scale:
    customers: int = 400
    suppliers: int = 30
    products: int = 250
    order_lines: int = 60_000  # approximate target of order_items rows (orders ~ order_lines / 4)
    history_days: int = 365  # orders spread over [as_of - history_days, as_of]
    warehouses: int = 4


# ---------------------------------------------------------------------------------------------------
# Reference data
# ---------------------------------------------------------------------------------------------------

# uf -> (region, share of pharmacies, ICMS rate in basis points, capital DDD, cities)
UF_INFO: dict[str, tuple[str, float, int, int, tuple[str, ...]]] = {
    "SP": ("Sudeste", 22.0, 1800, 11, ("São Paulo", "Campinas", "Ribeirão Preto", "Santos", "Sorocaba")),
    "MG": ("Sudeste", 10.0, 1800, 31, ("Belo Horizonte", "Uberlândia", "Juiz de Fora", "Contagem")),
    "RJ": ("Sudeste", 8.0, 2000, 21, ("Rio de Janeiro", "Niterói", "Duque de Caxias", "Nova Iguaçu")),
    "ES": ("Sudeste", 2.0, 1700, 27, ("Vitória", "Vila Velha", "Serra")),
    "PR": ("Sul", 6.0, 1950, 41, ("Curitiba", "Londrina", "Maringá")),
    "SC": ("Sul", 4.0, 1700, 48, ("Florianópolis", "Joinville", "Blumenau")),
    "RS": ("Sul", 6.0, 1700, 51, ("Porto Alegre", "Caxias do Sul", "Pelotas")),
    "BA": ("Nordeste", 6.0, 2050, 71, ("Salvador", "Feira de Santana", "Vitória da Conquista")),
    "PE": ("Nordeste", 4.0, 2050, 81, ("Recife", "Jaboatão dos Guararapes", "Caruaru")),
    "CE": ("Nordeste", 4.0, 2000, 85, ("Fortaleza", "Juazeiro do Norte", "Sobral")),
    "MA": ("Nordeste", 2.0, 2200, 98, ("São Luís", "Imperatriz")),
    "PB": ("Nordeste", 2.0, 2000, 83, ("João Pessoa", "Campina Grande")),
    "RN": ("Nordeste", 1.5, 1800, 84, ("Natal", "Mossoró")),
    "AL": ("Nordeste", 1.5, 1900, 82, ("Maceió", "Arapiraca")),
    "SE": ("Nordeste", 1.0, 1900, 79, ("Aracaju", "Nossa Senhora do Socorro")),
    "PI": ("Nordeste", 1.3, 2100, 86, ("Teresina", "Parnaíba")),
    "GO": ("Centro-Oeste", 3.5, 1900, 62, ("Goiânia", "Anápolis", "Aparecida de Goiânia")),
    "DF": ("Centro-Oeste", 1.5, 2000, 61, ("Brasília", "Taguatinga", "Ceilândia")),
    "MT": ("Centro-Oeste", 1.7, 1700, 65, ("Cuiabá", "Várzea Grande", "Rondonópolis")),
    "MS": ("Centro-Oeste", 1.3, 1700, 67, ("Campo Grande", "Dourados")),
    "PA": ("Norte", 2.5, 1900, 91, ("Belém", "Ananindeua", "Santarém")),
    "AM": ("Norte", 1.8, 2000, 92, ("Manaus", "Parintins")),
    "RO": ("Norte", 0.8, 1950, 69, ("Porto Velho", "Ji-Paraná")),
    "TO": ("Norte", 0.7, 2000, 63, ("Palmas", "Araguaína")),
    "AC": ("Norte", 0.4, 1900, 68, ("Rio Branco", "Cruzeiro do Sul")),
    "AP": ("Norte", 0.4, 1800, 96, ("Macapá", "Santana")),
    "RR": ("Norte", 0.3, 2000, 95, ("Boa Vista", "Rorainópolis")),
}
UFS = tuple(UF_INFO)
UF_REGION = {uf: info[0] for uf, info in UF_INFO.items()}
# shipping cost base (cents) by region: the distributor ships from the South-East
REGION_SHIPPING = {"Sudeste": 2500, "Sul": 3500, "Centro-Oeste": 4500, "Nordeste": 5500, "Norte": 7500}
FREE_SHIPPING_CENTS = 150_000

WAREHOUSES = ("CD-SP", "CD-MG", "CD-PE", "CD-RS", "CD-GO", "CD-PR", "CD-BA", "CD-RJ", "CD-PA", "CD-SC")

TIERS = ("bronze", "silver", "gold", "platinum")
TIER_SHARE = (0.58, 0.25, 0.12, 0.05)  # skewed toward bronze
TIER_ORDER_WEIGHT = (1.0, 1.8, 3.2, 5.5)  # bigger customers order more often
TIER_QTY_FACTOR = (1.0, 1.4, 2.0, 3.0)
TIER_CREDIT = ((5_000, 30_000), (30_000, 80_000), (80_000, 200_000), (200_000, 600_000))  # reais
TIER_DISCOUNT = (0.015, 0.03, 0.06, 0.10)  # tier price vs list price
TIER_TERMS = (
    ("à vista", "28 dias", "30 dias"),
    ("30 dias", "30/60 dias"),
    ("30/60 dias", "45 dias", "30/60/90 dias"),
    ("30/60/90 dias", "60 dias", "60/90 dias"),
)
TERM_DAYS = {"à vista": 0, "28 dias": 28, "30 dias": 30, "30/60 dias": 45, "45 dias": 45}
TERM_DAYS |= {"30/60/90 dias": 60, "60 dias": 60, "60/90 dias": 75}

PAYMENT_METHODS = ("boleto", "pix", "cartao_credito", "prazo")
PAYMENT_METHOD_WEIGHTS = (0.34, 0.26, 0.12, 0.28)
UPFRONT_METHODS = frozenset(("pix", "cartao_credito"))  # paid when the order is confirmed

# weekday seasonality (Mon..Sun): pharmacies restock early in the week, almost nothing on Sunday
WEEKDAY_FACTOR = (1.25, 1.15, 1.1, 1.05, 1.0, 0.35, 0.1)
# month seasonality: winter (respiratory season) is busier, December/January quieter
MONTH_FACTOR = (0.9, 0.95, 1.0, 1.0, 1.08, 1.15, 1.15, 1.08, 1.0, 1.0, 0.97, 0.88)
# lines per order 1..12, mean ~4
LINE_WEIGHTS = (16, 15, 15, 13, 11, 9, 7, 5, 4, 3, 1, 1)

NOTES = (
    "Entregar no período da manhã",
    "Receber somente com nota fiscal",
    "Cliente solicita agendamento de entrega",
    "Pedido feito pelo representante comercial",
    "Conferir validade mínima de 12 meses",
    "Entregar pela doca lateral",
)
NOTES_COPY = tuple(n.replace("\\", "\\\\") for n in NOTES)  # COPY-escaped (no tabs or newlines in them)
DISCOUNT_PCTS = (2, 3, 5, 8, 10)  # promotional line discounts, percent
LATE_NOTES = ("Nota fiscal reemitida", "Ajuste de endereço de entrega", "Conciliação bancária")

# (active ingredient, dosages, form, package sizes, therapeutic class, sold over the counter)
# fmt: off
DRUGS: tuple[tuple[str, tuple[str, ...], str, tuple[int, ...], str, bool], ...] = (
    ("losartana potássica", ("25 mg", "50 mg", "100 mg"), "comprimido revestido", (30, 60), "Anti-hipertensivos", False),
    ("dipirona monoidratada", ("500 mg", "1 g"), "comprimido", (10, 20), "Analgésicos", True),
    ("amoxicilina", ("500 mg", "875 mg"), "cápsula", (15, 21), "Antibióticos", False),
    ("omeprazol", ("20 mg", "40 mg"), "cápsula", (14, 28, 56), "Antiulcerosos", False),
    ("cloridrato de metformina", ("500 mg", "850 mg", "1 g"), "comprimido", (30, 60), "Antidiabéticos", False),
    ("sinvastatina", ("20 mg", "40 mg"), "comprimido revestido", (30,), "Hipolipemiantes", False),
    ("atorvastatina cálcica", ("10 mg", "20 mg", "40 mg"), "comprimido revestido", (30,), "Hipolipemiantes", False),
    ("maleato de enalapril", ("10 mg", "20 mg"), "comprimido", (30,), "Anti-hipertensivos", False),
    ("captopril", ("25 mg", "50 mg"), "comprimido", (30,), "Anti-hipertensivos", False),
    ("hidroclorotiazida", ("25 mg",), "comprimido", (30,), "Diuréticos", False),
    ("furosemida", ("40 mg",), "comprimido", (20,), "Diuréticos", False),
    ("besilato de anlodipino", ("5 mg", "10 mg"), "comprimido", (30,), "Anti-hipertensivos", False),
    ("atenolol", ("25 mg", "50 mg"), "comprimido", (30,), "Betabloqueadores", False),
    ("cloridrato de propranolol", ("40 mg",), "comprimido", (30,), "Betabloqueadores", False),
    ("paracetamol", ("500 mg", "750 mg"), "comprimido", (10, 20), "Analgésicos", True),
    ("ibuprofeno", ("200 mg", "400 mg", "600 mg"), "comprimido revestido", (10, 20), "Anti-inflamatórios", True),
    ("nimesulida", ("100 mg",), "comprimido", (12,), "Anti-inflamatórios", False),
    ("diclofenaco sódico", ("50 mg",), "comprimido revestido", (20,), "Anti-inflamatórios", False),
    ("azitromicina", ("500 mg",), "comprimido revestido", (3, 5), "Antibióticos", False),
    ("cefalexina", ("500 mg",), "cápsula", (8, 40), "Antibióticos", False),
    ("cloridrato de ciprofloxacino", ("500 mg",), "comprimido revestido", (6, 14), "Antibióticos", False),
    ("cloridrato de sertralina", ("50 mg", "100 mg"), "comprimido revestido", (28, 30), "Antidepressivos", False),
    ("cloridrato de fluoxetina", ("20 mg",), "cápsula", (28, 30), "Antidepressivos", False),
    ("oxalato de escitalopram", ("10 mg", "20 mg"), "comprimido revestido", (28, 30), "Antidepressivos", False),
    ("clonazepam", ("0,5 mg", "2 mg"), "comprimido", (20, 30), "Ansiolíticos", False),
    ("alprazolam", ("0,5 mg", "1 mg"), "comprimido", (30,), "Ansiolíticos", False),
    ("levotiroxina sódica", ("25 mcg", "50 mcg", "100 mcg"), "comprimido", (30, 90), "Hormônios", False),
    ("glibenclamida", ("5 mg",), "comprimido", (30,), "Antidiabéticos", False),
    ("gliclazida", ("30 mg", "60 mg"), "comprimido de liberação prolongada", (30,), "Antidiabéticos", False),
    ("pantoprazol", ("20 mg", "40 mg"), "comprimido revestido", (28, 42), "Antiulcerosos", False),
    ("esomeprazol magnésico", ("20 mg", "40 mg"), "comprimido revestido", (28,), "Antiulcerosos", False),
    ("loratadina", ("10 mg",), "comprimido", (12,), "Antialérgicos", True),
    ("desloratadina", ("5 mg",), "comprimido revestido", (10, 30), "Antialérgicos", False),
    ("maleato de dexclorfeniramina", ("2 mg",), "comprimido", (20,), "Antialérgicos", False),
    ("prednisona", ("5 mg", "20 mg"), "comprimido", (10, 20), "Corticoides", False),
    ("dexametasona", ("4 mg",), "comprimido", (10,), "Corticoides", False),
    ("sulfato de salbutamol", ("100 mcg/dose",), "aerossol", (200,), "Broncodilatadores", False),
    ("montelucaste de sódio", ("10 mg",), "comprimido revestido", (30,), "Antiasmáticos", False),
    ("cloridrato de metoclopramida", ("10 mg",), "comprimido", (20,), "Antieméticos", False),
    ("cloridrato de ondansetrona", ("4 mg", "8 mg"), "comprimido orodispersível", (10,), "Antieméticos", False),
    ("simeticona", ("40 mg", "125 mg"), "cápsula", (10, 20), "Antigases", True),
    ("cloridrato de loperamida", ("2 mg",), "comprimido", (12,), "Antidiarreicos", True),
    ("citrato de sildenafila", ("25 mg", "50 mg", "100 mg"), "comprimido revestido", (4, 8), "Urologia", False),
    ("tadalafila", ("5 mg", "20 mg"), "comprimido revestido", (4, 30), "Urologia", False),
    ("ácido acetilsalicílico", ("100 mg", "500 mg"), "comprimido", (30, 20), "Antiagregantes", True),
    ("bissulfato de clopidogrel", ("75 mg",), "comprimido revestido", (28, 30), "Antiagregantes", False),
    ("varfarina sódica", ("5 mg",), "comprimido", (30,), "Anticoagulantes", False),
    ("rivaroxabana", ("15 mg", "20 mg"), "comprimido revestido", (28,), "Anticoagulantes", False),
    ("alendronato de sódio", ("70 mg",), "comprimido", (4,), "Osteoporose", False),
    ("valsartana", ("80 mg", "160 mg"), "comprimido revestido", (28, 30), "Anti-hipertensivos", False),
    ("carvedilol", ("6,25 mg", "12,5 mg", "25 mg"), "comprimido", (30,), "Betabloqueadores", False),
    ("espironolactona", ("25 mg", "50 mg"), "comprimido", (30,), "Diuréticos", False),
    ("ácido ascórbico", ("1 g",), "comprimido efervescente", (10,), "Vitaminas", True),
    ("colecalciferol", ("1.000 UI", "7.000 UI"), "cápsula", (8, 30), "Vitaminas", True),
    ("sulfato ferroso", ("40 mg",), "comprimido revestido", (30, 50), "Vitaminas", True),
)
# fmt: on
# (category, subcategory, label, active ingredient, concentration, package) for non-drug lines
# fmt: off
CARE_PRODUCTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("Dermocosméticos", "Proteção Solar", "Protetor solar facial", "octocrileno", "FPS 50", "50 g"),
    ("Dermocosméticos", "Proteção Solar", "Protetor solar corporal", "avobenzona", "FPS 30", "200 ml"),
    ("Dermocosméticos", "Tratamento Facial", "Sérum facial", "ácido hialurônico", "2%", "30 ml"),
    ("Dermocosméticos", "Tratamento Facial", "Sérum antioxidante", "vitamina C", "10%", "30 ml"),
    ("Dermocosméticos", "Tratamento Facial", "Sérum uniformizador", "niacinamida", "10%", "30 ml"),
    ("Dermocosméticos", "Tratamento Facial", "Creme noturno", "retinol", "0,3%", "30 g"),
    ("Dermocosméticos", "Hidratação", "Creme hidratante", "ureia", "10%", "200 g"),
    ("Dermocosméticos", "Acne", "Gel secativo", "peróxido de benzoíla", "5%", "20 g"),
    ("Higiene Pessoal", "Saúde Bucal", "Creme dental", "fluoreto de sódio", "1450 ppm", "90 g"),
    ("Higiene Pessoal", "Saúde Bucal", "Enxaguante bucal", "cloreto de cetilpiridínio", "0,075%", "500 ml"),
    ("Higiene Pessoal", "Higiene Corporal", "Sabonete antisséptico", "triclocarbana", "1%", "90 g"),
    ("Higiene Pessoal", "Higiene Corporal", "Álcool em gel", "álcool etílico", "70%", "500 ml"),
    ("Higiene Pessoal", "Cabelos", "Shampoo anticaspa", "piritionato de zinco", "1%", "200 ml"),
)
# fmt: on
PHARMA_MANUFACTURERS = (
    "EMS",
    "Medley",
    "Eurofarma",
    "Aché",
    "Neo Química",
    "Germed",
    "Cimed",
    "Prati-Donaduzzi",
    "Teuto",
    "Biolab Sanus",
    "Libbs",
    "Sandoz",
    "Sanofi",
    "Novartis",
    "Pfizer",
    "Bayer",
    "AstraZeneca",
    "Takeda",
    "Torrent",
    "Legrand",
    "Hipolabor",
    "Medquímica",
    "Geolab",
    "Brainfarma",
)  # fmt: skip
CARE_MANUFACTURERS = (
    "La Roche-Posay",
    "Vichy",
    "Eucerin",
    "Bioderma",
    "Avène",
    "Colgate",
    "Nivea",
    "Granado",
)
SAINTS = ("São José", "São João", "Santa Luzia", "São Francisco", "Santa Rita", "São Paulo", "Santo Antônio")
PHARMACY_WORDS = ("Popular", "Econômica", "Saúde", "Vida", "Bem Estar", "Central", "do Povo", "Nova Era")
COMPANY_SUFFIXES = ("Ltda", "ME", "EIRELI", "Ltda", "Ltda")

ORDER_COLUMNS = (
    "id", "customer_id", "order_date", "status", "subtotal", "discount", "tax", "shipping_cost", "total",
    "payment_method", "payment_status", "shipping_address", "notes", "created_at", "updated_at",
)  # fmt: skip
ITEM_COLUMNS = (
    "id", "order_id", "product_id", "quantity", "unit_price", "discount", "tax", "total", "created_at",
    "updated_at",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------


def cnpj_check_digits(base12: str) -> str:
    """The two CNPJ check digits (mod 11 with the official weights) for a 12-digit base."""
    weights = (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)
    digits = base12
    for w in (weights, (6, *weights)):
        rest = sum(int(d) * k for d, k in zip(digits, w, strict=True)) % 11
        digits += "0" if rest < 2 else str(11 - rest)
    return digits[12:]


def make_cnpj(rng: random.Random, used: set[str]) -> str:
    """A unique, valid CNPJ (digits only); most companies are the head office, branch 0001."""
    while True:
        root = f"{rng.randrange(1, 10**8):08d}"
        branch = "0001" if rng.random() < 0.85 else f"{rng.randint(2, 40):04d}"
        base = root + branch
        cnpj = base + cnpj_check_digits(base)
        if cnpj not in used and len(set(cnpj)) > 1:
            used.add(cnpj)
            return cnpj


def money(cents: int) -> str:
    """Integer cents as numeric text with exactly 2 decimals. Amounts are kept in integer cents so sums
    never drift; "%.2f" of cents/100 is exact for any amount below 10^13 cents and faster than divmod."""
    return "%.2f" % (cents / 100)


_DAY_TEXT: dict[int, str] = {}


def day_text(day: int) -> str:
    """ISO date of a day number (days since 1970-01-01), cached because it is on the hot path."""
    text = _DAY_TEXT.get(day)
    if text is None:
        text = _DAY_TEXT[day] = (EPOCH + dt.timedelta(days=day)).isoformat()
    return text


def ts_text(sec: int) -> str:
    """UTC timestamptz text for COPY from epoch seconds (faster than datetime.strftime)."""
    day, rest = divmod(sec, DAY)
    hour, rest = divmod(rest, HOUR)
    minute, second = divmod(rest, 60)
    return f"{day_text(day)} {hour:02d}:{minute:02d}:{second:02d}+00"


def day_number(date: dt.date) -> int:
    return (date - EPOCH).days


def copy_text(value: Any) -> str:
    """One value in PostgreSQL COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    text = str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def copy_line(values: Iterable[Any]) -> str:
    return "\t".join(copy_text(v) for v in values) + "\n"


def ascii_slug(text: str) -> str:
    """Lowercase ASCII for e-mail local parts and domains."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in plain.lower() if c.isalnum())


def sub_rng(seed: int, topic: str) -> random.Random:
    """An independent random stream per topic, so changing one part of the generator leaves the others
    byte-identical (string seeds are hashed with sha512: stable across processes and PYTHONHASHSEED)."""
    return random.Random(f"{seed}:{topic}")


def business_time(rng: random.Random) -> int:
    """Seconds into the day for an office-hours event (07:00-21:00 in Brasília = 10:00-24:00 UTC)."""
    return int(rng.triangular(10 * HOUR, 24 * HOUR - 1, 14 * HOUR))


class CopyBuffer:
    """Collects COPY text rows for one table and hands them to `sink` every `chunk` rows, so memory
    stays bounded whatever the total size."""

    def __init__(self, sink: CopySink, table: str, columns: Sequence[str], chunk: int = CHUNK_ROWS):
        self.sink = sink
        self.sql = f"copy {table} ({', '.join(columns)}) from stdin"
        self.chunk = chunk
        self.lines: list[str] = []
        self.rows = 0

    def add(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.sink.send(self.sql, "".join(self.lines))
            self.rows += len(self.lines)
            self.lines = []


class CopySink:
    """Runs COPY statements in order. With `background=True` a single worker thread runs them while the
    main thread keeps generating (psycopg2 releases the GIL while the server ingests), so Python work and
    server work overlap; the queue holds at most two chunks, which keeps memory bounded."""

    def __init__(self, cur: psycopg2.extensions.cursor, background: bool = False):
        self.cur = cur
        self.error: BaseException | None = None
        self.queue: queue.Queue[tuple[str, bytes] | None] | None = None
        self.thread: threading.Thread | None = None
        if background:
            self.queue = queue.Queue(maxsize=2)
            self.thread = threading.Thread(target=self._work, name="copy-sink", daemon=True)
            self.thread.start()

    def send(self, sql: str, text: str) -> None:
        if self.error is not None:
            raise self.error
        data = text.encode()
        if self.queue is None:
            self.cur.copy_expert(sql, io.BytesIO(data))
        else:
            self.queue.put((sql, data))

    def _work(self) -> None:
        assert self.queue is not None
        while (job := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.cur.copy_expert(job[0], io.BytesIO(job[1]))
                except BaseException as exc:  # re-raised in the main thread
                    self.error = exc

    def close(self) -> None:
        """Wait for every queued COPY; re-raise the first failure."""
        if self.queue is not None and self.thread is not None:
            self.queue.put(None)
            self.thread.join()
            self.queue = None
        if self.error is not None:
            raise self.error


def connect(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("set timezone to 'UTC'")
    return conn


# ---------------------------------------------------------------------------------------------------
# The in-memory model: only small per-customer / per-product arrays (never the orders)
# ---------------------------------------------------------------------------------------------------


@dataclass
class Catalog:
    """Per-product arrays (index = product id - 1) needed to price and pick order lines."""

    ids: list[int] = field(default_factory=list)
    popularity: list[float] = field(default_factory=list)
    end_day: list[int] = field(default_factory=list)  # last day the product can be sold
    pack_qty: list[float] = field(default_factory=list)  # typical units per order line
    change_day: list[int] = field(default_factory=list)  # first day of the second price period
    prices_before: list[tuple[int, int, int, int]] = field(default_factory=list)  # cents by tier index
    prices_after: list[tuple[int, int, int, int]] = field(default_factory=list)


@dataclass
class Clientele:
    """Per-customer arrays (index = customer id - 1) used to place orders."""

    ids: list[int] = field(default_factory=list)
    tier: list[int] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    start_day: list[int] = field(default_factory=list)  # first day the customer may order
    end_day: list[int] = field(default_factory=list)  # last day (inactive / suspended customers stop)
    icms_bp: list[int] = field(default_factory=list)
    shipping_base: list[int] = field(default_factory=list)
    term_days: list[int] = field(default_factory=list)
    address: list[str] = field(default_factory=list)  # already COPY-escaped


@dataclass
class IdCounters:
    order: int = 1
    item: int = 1


def popularity_weights(seed: int, n: int) -> list[float]:
    """Long-tailed sales popularity per product; recomputed identically by advance_day."""
    rng = sub_rng(seed, "popularity")
    return [rng.lognormvariate(0.0, 1.1) for _ in range(n)]


def activity_weights(seed: int, n: int) -> list[float]:
    """Per-customer ordering propensity (multiplied by the tier weight); recomputed by advance_day."""
    rng = sub_rng(seed, "activity")
    return [rng.lognormvariate(0.0, 0.5) for _ in range(n)]


def mean_lines_per_order() -> float:
    return sum((k + 1) * w for k, w in enumerate(LINE_WEIGHTS)) / sum(LINE_WEIGHTS)


# ---------------------------------------------------------------------------------------------------
# Master data
# ---------------------------------------------------------------------------------------------------


def _faker(seed: int) -> Any:
    from faker import Faker

    fake = Faker("pt_BR")
    fake.seed_instance(seed)
    return fake


def _phone(rng: random.Random, uf: str) -> str:
    ddd = UF_INFO[uf][3]
    if rng.random() < 0.6:
        return f"({ddd}) 9{rng.randint(6000, 9999)}-{rng.randint(0, 9999):04d}"
    return f"({ddd}) {rng.randint(2000, 5999)}-{rng.randint(0, 9999):04d}"


def _pick_uf(rng: random.Random) -> str:
    return rng.choices(UFS, weights=[info[1] for info in UF_INFO.values()])[0]


def _pharmacy_name(rng: random.Random, fake: Any) -> str:
    kind = rng.random()
    prefix = "Drogaria" if rng.random() < 0.5 else "Farmácia"
    if kind < 0.35:
        name = f"{prefix} {fake.last_name()}"
    elif kind < 0.55:
        name = f"{prefix} {rng.choice(SAINTS)}"
    elif kind < 0.8:
        name = f"{prefix} {rng.choice(PHARMACY_WORDS)}"
    else:
        name = f"{prefix} {fake.bairro()}"
    return f"{name} {rng.choice(COMPANY_SUFFIXES)}"


def _supplier_rows(seed: int, scale: Scale, start_day: int, cutoff: int, used: set[str]) -> tuple[list, dict]:
    """Suppliers: real-looking manufacturers first, then distributors. Returns rows and name -> id."""
    rng, fake = sub_rng(seed, "suppliers"), _faker(seed + 1)
    n_mfr = max(1, round(scale.suppliers * 0.6)) if scale.suppliers > 1 else scale.suppliers
    rows, by_name = [], {}
    for i in range(scale.suppliers):
        sid = i + 1
        if i < n_mfr:
            base = PHARMA_MANUFACTURERS[i % len(PHARMA_MANUFACTURERS)]
            round_no = i // len(PHARMA_MANUFACTURERS)
            by_name.setdefault(base, sid)
            name = f"{base} Indústria Farmacêutica" + (f" {round_no + 1}" if round_no else "")
            kind = "manufacturer"
        else:
            name = f"{fake.last_name()} Distribuidora de Medicamentos {rng.choice(COMPANY_SUFFIXES)}"
            kind = "distributor"
        uf = rng.choices(("SP", "RJ", "MG", "GO", "PR", "PE"), weights=(50, 12, 12, 10, 8, 8))[0]
        contact = f"{fake.first_name()} {fake.last_name()}"
        parts = contact.split()
        email = f"{ascii_slug(parts[0])}.{ascii_slug(parts[-1])}@{ascii_slug(name.split()[0])}.com.br"
        created = (start_day - rng.randint(400, 2500)) * DAY + business_time(rng)
        updated = created if rng.random() < 0.5 else rng.randint(created, cutoff)
        status = "active" if rng.random() < 0.93 else "inactive"
        terms = rng.choice(("30 dias", "30/60 dias", "45 dias", "60 dias", "30/60/90 dias"))
        rows.append(
            (sid, name, make_cnpj(rng, used), kind, contact, email, _phone(rng, uf), terms, uf, UF_REGION[uf],
             status, ts_text(created), ts_text(updated))
        )  # fmt: skip
    return rows, by_name


# ---------------------------------------------------------------------------------------------------
# Acquisition: how each pharmacy found the distributor (customers.utm_source / utm_campaign)
# ---------------------------------------------------------------------------------------------------

# The marketing team's Facebook ad accounts and campaigns are part of the sample world: pharmacies that
# signed up while the ads ran carry the campaign that acquired them, and the Graph API test double
# (loaders/facebook/graph_double.py) rebuilds the very same campaigns from the seed and reports a purchase
# conversion on each acquisition day. Everything here draws from its own random streams, so the rest of
# the world (names, CNPJs, orders) is byte-identical to what it was before acquisition existed.

UTM_SOURCES = ("facebook", "google", "organic", "referral")
UTM_WEIGHTS = (0.45, 0.22, 0.18, 0.15)  # pharmacies that signed up while the ad accounts were running
LEGACY_UTM = ((None, 0.6), ("referral", 0.25), ("organic", 0.15))  # older pharmacies: mostly unknown
GOOGLE_CAMPAIGNS = ("gads_search_marca", "gads_search_genericos", "gads_pmax_farmacias")
REFERRAL_CAMPAIGNS = ("indicacao_representante", "indicacao_cliente")
ADS_LEAD_DAYS = 45  # the ad accounts started this many days before the order history window
ALWAYS_ON = 10**6  # end_day of campaigns that never stop
FACEBOOK_ACCOUNT_NAMES = ("Distribuidora | Aquisição Nacional", "Distribuidora | Regional Norte-Nordeste")
CAMPAIGN_THEMES = (
    ("Cadastro de Farmácias Independentes", "OUTCOME_LEADS"),
    ("Genéricos com Desconto Progressivo", "OUTCOME_SALES"),
    ("Inverno Respiratório", "OUTCOME_SALES"),
    ("Dermocosméticos para Revenda", "OUTCOME_TRAFFIC"),
    ("Prazo Estendido no Primeiro Pedido", "OUTCOME_SALES"),
    ("Frete Grátis Acima de R$ 1.500", "OUTCOME_LEADS"),
)
MONTHS_PT = ("jan", "fev", "mar", "abr", "mai", "jun", "jul", "ago", "set", "out", "nov", "dez")


@dataclass(frozen=True)
class AdCampaign:
    """One Facebook campaign of the sample world (ids are Graph-style numeric strings)."""

    id: str
    account_id: str  # the ad account, without the act_ prefix
    name: str
    objective: str
    start_day: int  # first day of delivery
    end_day: int  # last day of delivery (ALWAYS_ON: still running, whatever the world date)
    fate: str  # effective_status once delivery ended: PAUSED, ARCHIVED or DELETED (always-on: ACTIVE)
    weight: float  # share of the acquisitions among the campaigns running on the same day


def facebook_account_names(accounts: int | None = None) -> list[str]:
    """The ad accounts' names: the world's own accounts, then (benchmarks) numbered extra ones."""
    count = len(FACEBOOK_ACCOUNT_NAMES) if accounts is None else accounts
    extra = [
        f"Distribuidora | Conta Regional {n:02d}" for n in range(len(FACEBOOK_ACCOUNT_NAMES) + 1, count + 1)
    ]
    return [*FACEBOOK_ACCOUNT_NAMES, *extra][:count]


def facebook_account_ids(seed: int, accounts: int | None = None) -> list[str]:
    """The ad account ids (without act_) of the sample world. `accounts` beyond the world's own (benchmarks:
    50 accounts) continue the same random stream, so the first accounts stay the same."""
    rng = sub_rng(seed, "facebook:accounts")
    return [str(rng.randrange(10**14, 10**15)) for _ in facebook_account_names(accounts)]


def facebook_campaigns(
    seed: int, start_day: int, as_of_day: int, accounts: int | None = None
) -> list[AdCampaign]:
    """Every Facebook campaign of the world generated with (seed, history start, as_of): per ad account an
    always-on prospecting campaign and a sequence of seasonal ones; campaigns that ended before as_of end
    up paused, archived or deleted (at least one archived and one deleted when two or more ended).
    Extra `accounts` get their campaigns from a stream of their own, after the world's, which do not change."""
    account_ids = facebook_account_ids(seed, accounts)
    own = len(FACEBOOK_ACCOUNT_NAMES)
    campaigns = _account_campaigns(
        sub_rng(seed, "facebook:campaigns"), account_ids[:own], start_day, as_of_day
    )
    if len(account_ids) > own:
        extra = sub_rng(seed, "facebook:campaigns:extra")
        campaigns += _account_campaigns(extra, account_ids[own:], start_day, as_of_day)
    return campaigns


def _account_campaigns(
    rng: random.Random, account_ids: Sequence[str], start_day: int, as_of_day: int
) -> list[AdCampaign]:
    first_day = start_day - ADS_LEAD_DAYS
    campaigns: list[AdCampaign] = []
    for account_id in account_ids:
        campaigns.append(
            AdCampaign(
                id=f"120{rng.randrange(10**14, 10**15)}",
                account_id=account_id,
                name="BR | Prospecção Always-on | Farmácias",
                objective="OUTCOME_LEADS",
                start_day=first_day,
                end_day=ALWAYS_ON,
                fate="ACTIVE",
                weight=1.0,
            )
        )
        day = first_day + rng.randint(0, 15)
        while day <= as_of_day - 5:
            length = rng.randint(21, 70)
            theme, objective = rng.choice(CAMPAIGN_THEMES)
            date = EPOCH + dt.timedelta(days=day)
            fate = rng.choices(("ARCHIVED", "PAUSED", "DELETED"), weights=(0.5, 0.3, 0.2))[0]
            campaigns.append(
                AdCampaign(
                    id=f"120{rng.randrange(10**14, 10**15)}",
                    account_id=account_id,
                    name=f"BR | {theme} | {MONTHS_PT[date.month - 1]}/{date.year}",
                    objective=objective,
                    start_day=day,
                    end_day=day + length - 1,
                    fate=fate,
                    weight=rng.uniform(1.5, 3.0),
                )
            )
            day += length + rng.randint(5, 25)
    ended = sorted((c for c in campaigns if c.end_day < as_of_day), key=lambda c: (c.end_day, c.id))
    fates = {c.id: c.fate for c in campaigns}
    if len(ended) >= 2:
        if all(fates[c.id] != "DELETED" for c in ended):
            fates[ended[0].id] = "DELETED"
        if all(fates[c.id] != "ARCHIVED" for c in ended):
            kept = [c for c in reversed(ended) if fates[c.id] != "DELETED"] or [ended[-1]]
            fates[kept[0].id] = "ARCHIVED"
    return [replace(c, fate=fates[c.id]) for c in campaigns]


def _weighted(value: float, options: Sequence[tuple[Any, float]]) -> Any:
    """The option that `value` (uniform in [0, 1)) falls on, by cumulative share."""
    total = sum(share for _, share in options)
    for option, share in options:
        value -= share / total
        if value < 0:
            return option
    return options[-1][0]


def _acquisition(
    rng: random.Random, created_day: int, first_ads_day: int, campaigns: Sequence[AdCampaign]
) -> tuple[str | None, str | None]:
    """(utm_source, utm_campaign) of a pharmacy created on `created_day`; always three draws, so one
    pharmacy's channel never shifts another's."""
    channel, pick, name = rng.random(), rng.random(), rng.random()
    if created_day < first_ads_day:
        return _weighted(channel, LEGACY_UTM), None
    source = _weighted(channel, tuple(zip(UTM_SOURCES, UTM_WEIGHTS, strict=True)))
    if source == "facebook":
        running = [c for c in campaigns if c.start_day <= created_day <= c.end_day]
        if running:
            return "facebook", _weighted(pick, [(c.id, c.weight) for c in running])
        source = "google"
    if source == "google":
        return "google", GOOGLE_CAMPAIGNS[int(name * len(GOOGLE_CAMPAIGNS))]
    if source == "referral":
        return "referral", REFERRAL_CAMPAIGNS[int(name * len(REFERRAL_CAMPAIGNS))] if pick < 0.5 else None
    return source, None


def _customer_rows(
    seed: int, scale: Scale, start_day: int, as_of_day: int, used: set[str]
) -> tuple[list, Clientele]:
    """Pharmacies with their ordering window; the Clientele arrays drive order placement."""
    rng, fake = sub_rng(seed, "customers"), _faker(seed)
    activity = activity_weights(seed, scale.customers)
    acquisition, campaigns = sub_rng(seed, "acquisition"), facebook_campaigns(seed, start_day, as_of_day)
    cutoff = (as_of_day + 1) * DAY - 1
    rows, cl = [], Clientele()
    span = max(1, as_of_day - start_day)
    for i in range(scale.customers):
        cid = i + 1
        uf = _pick_uf(rng)
        region, _, icms, _, cities = UF_INFO[uf]
        tier = rng.choices(range(4), weights=TIER_SHARE)[0]
        name = _pharmacy_name(rng, fake)
        contact = f"{fake.first_name()} {fake.last_name()}"
        parts = contact.split()
        domain = rng.choice(
            ("gmail.com", "hotmail.com", "outlook.com", f"{ascii_slug(name.split()[1])}.com.br")
        )
        email = f"{ascii_slug(parts[0])}.{ascii_slug(parts[-1])}{rng.randint(1, 99)}@{domain}"
        address = f"{fake.street_name()}, {rng.randint(10, 4999)} - {fake.bairro()}"
        city = rng.choice(cities)
        # 70% were customers before the history window; the rest signed up during it
        if rng.random() < 0.7:
            first_day = start_day - rng.randint(1, 1500)
        else:
            first_day = start_day + rng.randint(0, int(span * 0.9))
        created = (first_day - rng.randint(1, 20)) * DAY + business_time(rng)
        roll, last_day, updated = rng.random(), as_of_day + 10**6, created
        status = "active"
        if roll < 0.07:  # stopped buying at some point and was marked inactive
            status = "inactive"
            last_day = rng.randint(max(first_day, start_day), as_of_day)
            updated = last_day * DAY + business_time(rng) + 3 * DAY
        elif roll < 0.10:  # suspended recently (credit problems)
            status = "suspended"
            last_day = max(first_day, as_of_day - rng.randint(1, 60))
            updated = last_day * DAY + business_time(rng)
        elif rng.random() < 0.35:  # some other profile edit
            updated = rng.randint(created, cutoff)
        updated = min(max(updated, created), cutoff)
        lo, hi = TIER_CREDIT[tier]
        credit = rng.randrange(lo, hi, 1000) * 100
        terms = rng.choice(TIER_TERMS[tier])
        utm = _acquisition(acquisition, created // DAY, start_day - ADS_LEAD_DAYS, campaigns)
        rows.append(
            (cid, name, make_cnpj(rng, used), contact, email, _phone(rng, uf), address, city, uf, region,
             TIERS[tier], money(credit), terms, status, ts_text(created), ts_text(updated), *utm)
        )  # fmt: skip
        cl.ids.append(cid)
        cl.tier.append(tier)
        cl.weight.append(TIER_ORDER_WEIGHT[tier] * activity[i])
        cl.start_day.append(first_day)
        cl.end_day.append(last_day)
        cl.icms_bp.append(icms)
        cl.shipping_base.append(REGION_SHIPPING[region])
        cl.term_days.append(TERM_DAYS[terms])
        cl.address.append(copy_text(f"{address}, {city} - {uf}"))
    return rows, cl


def _regulatory_code(rng: random.Random, first_digit: str, maker_index: int) -> str:
    """13-digit Anvisa registration: class digit, 4-digit company, 4-digit product, 3-digit presentation,
    1 trailing digit."""
    return f"{first_digit}{1000 + maker_index * 37 % 9000:04d}{rng.randint(1, 9999):04d}{rng.randint(1, 60):03d}{rng.randint(0, 9)}"


def _product_rows(
    seed: int, scale: Scale, start_day: int, as_of_day: int, mfr_supplier: dict[str, int]
) -> tuple[list, list[dict]]:
    """Products plus a small spec per product (list price, category) used by the pricing step."""
    rng = sub_rng(seed, "products")
    n_sup = scale.suppliers
    distributors = [sid for sid in range(1, n_sup + 1) if sid not in mfr_supplier.values()] or list(
        range(1, n_sup + 1)
    )
    cutoff = (as_of_day + 1) * DAY - 1
    rows, specs = [], []
    for i in range(scale.products):
        pid = i + 1
        if rng.random() < 0.85:
            ingredient, dosages, form, packs, klass, otc = rng.choice(DRUGS)
            dosage, pack = rng.choice(dosages), rng.choice(packs)
            unit = "doses" if form == "aerossol" else ("cápsulas" if form == "cápsula" else "comprimidos")
            package = f"{pack} {unit}"
            if otc:
                category, generic = "OTC", rng.random() < 0.4
            else:
                generic = rng.random() < 0.55
                category = "Genéricos" if generic else "Medicamentos"
            maker = rng.choice(PHARMA_MANUFACTURERS[:8] if generic else PHARMA_MANUFACTURERS)
            name = f"{ingredient[0].upper()}{ingredient[1:]} {dosage} {form} c/ {package}"
            subcategory, reg_digit = klass, "1"
            base = rng.lognormvariate(math.log(28.0), 0.7) * (0.55 if generic else 1.0) * (pack / 30) ** 0.5
        else:
            category, subcategory, label, ingredient, dosage, package = rng.choice(CARE_PRODUCTS)
            form, generic, reg_digit = label.lower(), False, "2"
            maker = rng.choice(CARE_MANUFACTURERS)
            name = f"{label} {maker} {dosage} {package}"
            base = rng.lognormvariate(math.log(45.0 if category == "Dermocosméticos" else 14.0), 0.4)
        maker_index = (PHARMA_MANUFACTURERS + CARE_MANUFACTURERS).index(maker)
        supplier = mfr_supplier.get(maker) or rng.choice(distributors)
        created = (start_day - rng.randint(30, 2000)) * DAY + business_time(rng)
        discontinued = rng.random() < 0.05
        # a discontinued product sells until end_day and is flagged the next morning
        end_day = (
            rng.randint(start_day + 30, as_of_day - 1)
            if discontinued and as_of_day > start_day + 31
            else None
        )
        if end_day is None:
            discontinued = False
            updated = created if rng.random() < 0.6 else rng.randint(created, cutoff)
        else:
            updated = (end_day + 1) * DAY + business_time(rng)
        reg = _regulatory_code(rng, reg_digit, maker_index)
        description = f"{category} / {subcategory}. {ingredient} {dosage}, {form}. Registro Anvisa {reg}."
        rows.append(
            (pid, f"SKU-{pid:06d}", name, description, category, subcategory, maker, supplier, ingredient,
             dosage, package, reg, generic, "discontinued" if discontinued else "active",
             ts_text(created), ts_text(min(updated, cutoff)))
        )  # fmt: skip
        specs.append(
            {
                "list": max(150, int(base * 100)),
                "created": created,
                "end_day": end_day,
                "pack": pack_size(package),
            }
        )
    return rows, specs


def pack_size(package: str) -> int:
    return int(package.split()[0].replace(".", "")) if package.split()[0].isdigit() else 1


def _pricing_rows(seed: int, specs: list[dict], start_day: int, as_of_day: int) -> tuple[list, Catalog]:
    """List price rows (tier null) and tier rows; ~30% of products had one price change during history."""
    rng = sub_rng(seed, "pricing")
    popularity = popularity_weights(seed, len(specs))
    rows, cat = [], Catalog()
    pricing_id = 1
    never = as_of_day + 10**6
    for i, spec in enumerate(specs):
        pid = i + 1
        list0 = spec["list"]
        first_day = max(day_number(EPOCH), spec["created"] // DAY)
        change_day = never
        if rng.random() < 0.3 and as_of_day - start_day > 20:
            change_day = rng.randint(start_day + 10, as_of_day - 5)
        list1 = int(list0 * rng.uniform(0.96, 1.12))
        tier_off = [TIER_DISCOUNT[t] + rng.uniform(0, 0.015) for t in range(4)]
        has_bronze = rng.random() < 0.4
        before = tuple(int(list0 * (1 - tier_off[t])) if t or has_bronze else list0 for t in range(4))
        after = tuple(int(list1 * (1 - tier_off[t])) if t or has_bronze else list1 for t in range(4))
        created = spec["created"] + rng.randint(0, 5 * DAY)
        changed_at = (change_day - rng.randint(1, 4)) * DAY + business_time(rng)
        tiers = [(None, list0, list1)] + [
            (TIERS[t], before[t], after[t]) for t in range(4) if t or has_bronze
        ]
        for tier, p0, p1 in tiers:
            if change_day == never:
                rows.append(
                    (
                        pricing_id,
                        pid,
                        tier,
                        money(p0),
                        day_text(first_day),
                        None,
                        ts_text(created),
                        ts_text(created),
                    )
                )
                pricing_id += 1
                continue
            rows.append(
                (pricing_id, pid, tier, money(p0), day_text(first_day), day_text(change_day - 1), ts_text(created),
                 ts_text(changed_at))
            )  # fmt: skip
            rows.append(
                (
                    pricing_id + 1,
                    pid,
                    tier,
                    money(p1),
                    day_text(change_day),
                    None,
                    ts_text(changed_at),
                    ts_text(changed_at),
                )
            )
            pricing_id += 2
        cat.ids.append(pid)
        cat.popularity.append(popularity[i])
        cat.end_day.append(spec["end_day"] if spec["end_day"] is not None else never)
        cat.pack_qty.append(max(2.0, 24.0 / max(1.0, spec["pack"] / 20)))
        cat.change_day.append(change_day)
        cat.prices_before.append(before)
        cat.prices_after.append(after)
    return rows, cat


def _inventory_rows(seed: int, scale: Scale, specs: list[dict], cat: Catalog, as_of_day: int) -> list:
    rng = sub_rng(seed, "inventory")
    warehouses = [
        WAREHOUSES[w] if w < len(WAREHOUSES) else f"CD-{w + 1:02d}" for w in range(scale.warehouses)
    ]
    rows = []
    inv_id = 1
    for i, spec in enumerate(specs):
        pop = cat.popularity[i]
        for code in warehouses:
            avail = int(pop * rng.uniform(40, 400)) if cat.end_day[i] > as_of_day else rng.randint(0, 20)
            reserved = rng.randint(0, max(1, avail // 8))
            incoming = rng.randint(50, 600) if rng.random() < 0.3 else 0
            reorder = max(10, int(pop * 60))
            updated = (as_of_day - rng.randint(0, 10)) * DAY + business_time(rng)
            rows.append(
                (
                    inv_id,
                    i + 1,
                    code,
                    avail,
                    reserved,
                    incoming,
                    reorder,
                    ts_text(spec["created"]),
                    ts_text(max(updated, spec["created"])),
                )
            )
            inv_id += 1
    return rows


# ---------------------------------------------------------------------------------------------------
# Orders (streamed)
# ---------------------------------------------------------------------------------------------------


def _between(rand: Callable[[], float], lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (a cheaper randint for the hot path)."""
    return lo + int(rand() * (hi - lo + 1))


def lifecycle(
    rng: random.Random, created: int, cutoff: int, method: str, term_days: int
) -> tuple[str, str, int]:
    """Status, payment status and last-change time of an order created at `created`, as seen at `cutoff`.

    Walks the real lifecycle (pending -> confirmed -> processing -> shipped -> delivered, or cancelled),
    so an order's state is always consistent with its age and payment method."""
    rand = rng.random  # randint() is ~5x slower than an inlined draw and this runs once per order
    upfront = method in UPFRONT_METHODS
    cancel = rand() < 0.045
    if cancel and rand() < 0.5:  # cancelled before confirmation
        at = created + _between(rand, HOUR // 2, 48 * HOUR)
        return ("cancelled", "cancelled", at) if at <= cutoff else ("pending", "pending", created)
    confirmed = created + _between(rand, HOUR, 30 * HOUR)
    if confirmed > cutoff:
        return "pending", "pending", created
    pay = "paid" if upfront else "pending"
    if cancel:
        at = confirmed + _between(rand, HOUR // 2, 48 * HOUR)
        if at <= cutoff:
            return "cancelled", ("refunded" if upfront else "cancelled"), at
        return "confirmed", pay, confirmed
    status, updated = "confirmed", confirmed
    at = confirmed
    delivered_at = None
    for step, lo, hi in (
        ("processing", 2 * HOUR, 30 * HOUR),
        ("shipped", 4 * HOUR, 48 * HOUR),
        ("delivered", DAY, 7 * DAY),
    ):
        at += _between(rand, lo, hi)
        if at > cutoff:
            break
        status, updated = step, at
        if step == "delivered":
            delivered_at = at
    if not upfront:
        if method == "boleto":
            due = confirmed + _between(rand, 1, 7) * DAY
        else:  # prazo: due `term_days` after delivery
            due = (delivered_at if delivered_at is not None else cutoff + DAY) + max(1, term_days) * DAY
        paid_at = due + _between(rand, -2 * DAY, 3 * DAY)
        if rand() < 0.03:  # defaulted
            if due + 3 * DAY <= cutoff:
                pay, updated = "overdue", max(updated, due + 3 * DAY)
        elif paid_at <= cutoff and (method == "boleto" or delivered_at is not None):
            pay, updated = "paid", max(updated, paid_at, confirmed)
    return status, pay, updated


class OrderWriter:
    """Builds one order with its lines as COPY text; shared by generate() and advance_day()."""

    def __init__(self, cat: Catalog, cl: Clientele, orders: CopyBuffer, items: CopyBuffer, ids: IdCounters):
        self.cat, self.cl, self.orders, self.items, self.ids = cat, cl, orders, items, ids
        self.cum_pop = list(_accumulate(cat.popularity))
        self.line_cum = list(_accumulate(LINE_WEIGHTS))
        self.n_products = len(cat.ids)

    def write(self, rng: random.Random, ci: int, day: int, created: int, cutoff: int) -> int:
        """Append one order of customer index `ci`; returns the number of lines written.

        This is the hot loop of the generator (one call per order), hence the local aliases, inlined
        product draws and money formatting (cents / 100 with 2 decimals, see money())."""
        cat, cl = self.cat, self.cl
        rand, log = rng.random, math.log
        cum, total_pop, n_products, end_day = self.cum_pop, self.cum_pop[-1], self.n_products, cat.end_day
        tier, order_id, item_id = cl.tier[ci], self.ids.order, self.ids.item
        k = bisect.bisect_right(self.line_cum, rand() * self.line_cum[-1]) + 1
        k = min(k, max(1, n_products // 2))
        created_txt = ts_text(created)
        qty_factor, icms = TIER_QTY_FACTOR[tier], cl.icms_bp[ci]
        subtotal = disc_sum = tax_sum = 0
        taken: list[int] = []
        buf = []
        for _ in range(k):
            for _attempt in range(20):  # popularity-weighted draw without repeats
                pi = bisect.bisect_right(cum, rand() * total_pop)
                if pi < n_products and pi not in taken and end_day[pi] >= day:
                    break
            else:
                continue
            taken.append(pi)
            unit = (cat.prices_after if day >= cat.change_day[pi] else cat.prices_before)[pi][tier]
            qty = 1 + int(-log(1.0 - rand()) * cat.pack_qty[pi] * qty_factor)  # exponential
            gross = qty * unit
            disc = gross * DISCOUNT_PCTS[int(rand() * 5)] // 100 if rand() < 0.18 else 0
            tax = ((gross - disc) * icms + 5000) // 10_000
            buf.append(
                f"{item_id}\t{order_id}\t{cat.ids[pi]}\t{qty}\t{unit / 100:.2f}\t{disc / 100:.2f}\t"
                f"{tax / 100:.2f}\t{(gross - disc + tax) / 100:.2f}\t{created_txt}\t{created_txt}\n"
            )
            item_id += 1
            subtotal += gross
            disc_sum += disc
            tax_sum += tax
        if not buf:  # nothing sellable today: no order
            return 0
        self.ids.order, self.ids.item = order_id + 1, item_id
        method = PAYMENT_METHODS[bisect.bisect_right(_PAY_CUM, rand())]
        if method == "prazo" and cl.term_days[ci] == 0:
            method = "boleto"
        status, pay, updated = lifecycle(rng, created, cutoff, method, cl.term_days[ci])
        shipping = 0 if subtotal >= FREE_SHIPPING_CENTS else cl.shipping_base[ci] + 150 * len(buf)
        note = NOTES_COPY[int(rand() * len(NOTES_COPY))] if rand() < 0.08 else "\\N"
        total = subtotal - disc_sum + tax_sum + shipping
        self.orders.add(
            f"{order_id}\t{cl.ids[ci]}\t{day_text(day)}\t{status}\t{subtotal / 100:.2f}\t{disc_sum / 100:.2f}\t"
            f"{tax_sum / 100:.2f}\t{shipping / 100:.2f}\t{total / 100:.2f}\t{method}\t{pay}\t{cl.address[ci]}\t"
            f"{note}\t{created_txt}\t{ts_text(updated)}\n"
        )
        items = self.items
        items.lines.extend(buf)
        if len(items.lines) >= items.chunk:
            self.orders.flush()  # orders first: order_items references them
            items.flush()
        return len(buf)


def _accumulate(values: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for v in values:
        total += v
        yield total


_PAY_CUM = list(_accumulate(PAYMENT_METHOD_WEIGHTS))
_PAY_CUM[-1] = 1.0 + 1e-9


def day_weight(day: int) -> float:
    date = EPOCH + dt.timedelta(days=day)
    return WEEKDAY_FACTOR[date.weekday()] * MONTH_FACTOR[date.month - 1]


class CustomerPool:
    """Cumulative weights of the customers allowed to order on a given day (rebuilt only when it changes)."""

    def __init__(self, cl: Clientele):
        self.cl = cl
        self.key: tuple[int, ...] | None = None
        self.members: list[int] = []
        self.cum: list[float] = []
        self.boundaries = sorted({d for d in cl.start_day} | {d + 1 for d in cl.end_day})

    def prepare(self, day: int) -> bool:
        key = (bisect.bisect_right(self.boundaries, day),)
        if key != self.key:
            self.key = key
            cl = self.cl
            self.members = [i for i in range(len(cl.ids)) if cl.start_day[i] <= day <= cl.end_day[i]]
            self.cum = list(_accumulate(cl.weight[i] for i in self.members))
        return bool(self.members)

    def pick(self, rng: random.Random) -> int:
        i = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        return self.members[min(i, len(self.members) - 1)]


def _write_orders(
    seed: int, scale: Scale, writer: OrderWriter, start_day: int, as_of_day: int, progress: Progress | None
) -> float:
    """Stream the order history day by day (ids follow time); returns the average orders per day."""
    rng = sub_rng(seed, "orders")
    cutoff = (as_of_day + 1) * DAY - 1
    target_orders = scale.order_lines / mean_lines_per_order()
    days = range(start_day, as_of_day + 1)
    # growth trend: +20% over the history window
    weights = [day_weight(d) * (1 + 0.2 * (d - start_day) / max(1, len(days))) for d in days]
    per_weight = target_orders / sum(weights)
    pool = CustomerPool(writer.cl)
    carry, lines, reported = 0.0, 0, 0
    for d, w in zip(days, weights, strict=True):
        expected = w * per_weight * rng.uniform(0.85, 1.15) + carry
        n = int(expected)
        carry = expected - n
        if not pool.prepare(d):
            continue
        times = sorted(d * DAY + business_time(rng) for _ in range(n))
        for created in times:
            lines += writer.write(rng, pool.pick(rng), d, created, cutoff)
        if progress and lines - reported >= 250_000:
            progress("order_items", lines)
            reported = lines
    return (writer.ids.order - 1) / max(1, len(days))


# ---------------------------------------------------------------------------------------------------
# Schema and state
# ---------------------------------------------------------------------------------------------------

STATE_DDL = f"""
create table if not exists {STATE_TABLE} (
    id integer primary key check (id = 1),
    seed bigint not null,
    as_of date not null,
    world_date date not null,
    orders_per_day numeric(14, 3) not null,
    next_order_id bigint not null,
    next_order_item_id bigint not null,
    next_pricing_id bigint not null,
    scale jsonb not null,
    rng_scheme text not null
)
"""
RNG_SCHEME = "python random.Random(f'{seed}:day:{iso date}') per simulated day"


def _create_schema(cur: psycopg2.extensions.cursor, reset: bool) -> None:
    if reset:
        cur.execute(f"drop table if exists {', '.join(reversed(TABLES))}, {STATE_TABLE} cascade")
    cur.execute(SCHEMA_FILE.read_text())
    cur.execute(STATE_DDL)
    # helps advance_day find open price rows and recent orders by status
    cur.execute(
        "create index if not exists ix_pricing_product_open on pricing (product_id) where effective_to is null"
    )
    cur.execute("create index if not exists ix_orders_status on orders (status)")


def _detach_constraints(cur: psycopg2.extensions.cursor) -> list[str]:
    """Drop foreign keys and secondary indexes before the bulk load and return the DDL that recreates
    them: building them once afterwards is several times faster than maintaining them row by row."""
    tables = list(TABLES)
    cur.execute(
        """
        select conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        from pg_constraint
        where contype = 'f' and conrelid = any(%s::regclass[])
        order by conname
        """,
        (tables,),
    )
    restore = [f"alter table {t} add constraint {name} {ddl}" for t, name, ddl in cur.fetchall()]
    for stmt in restore:
        t, name = stmt.split()[2], stmt.split()[5]
        cur.execute(f"alter table {t} drop constraint {name}")
    cur.execute(
        """
        select i.indexname, i.indexdef
        from pg_indexes i
        where i.schemaname = current_schema() and i.tablename = any(%s)
          and not exists (select 1 from pg_constraint c where c.conname = i.indexname)
        order by i.indexname
        """,
        (tables,),
    )
    indexes = cur.fetchall()
    for name, _ in indexes:
        cur.execute(f"drop index {name}")
    return [ddl for _, ddl in indexes] + restore


def _copy_rows(
    cur: psycopg2.extensions.cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence]
) -> int:
    buf = CopyBuffer(CopySink(cur), table, columns)
    for row in rows:
        buf.add(copy_line(row))
    buf.flush()
    return buf.rows


COLUMNS = {
    "suppliers": ("id", "name", "cnpj", "type", "contact_name", "contact_email", "contact_phone", "payment_terms", "uf",
                  "region", "status", "created_at", "updated_at"),
    "customers": ("id", "name", "cnpj", "contact_name", "email", "phone", "address", "city", "uf", "region", "tier",
                  "credit_limit", "payment_terms", "status", "created_at", "updated_at", "utm_source",
                  "utm_campaign"),
    "products": ("id", "sku", "name", "description", "category", "subcategory", "manufacturer", "supplier_id",
                 "active_ingredient", "dosage", "package_size", "regulatory_code", "is_generic", "status",
                 "created_at", "updated_at"),
    "pricing": ("id", "product_id", "customer_tier", "price", "effective_from", "effective_to", "created_at",
                "updated_at"),
    "inventory": ("id", "product_id", "warehouse_id", "quantity_available", "quantity_reserved",
                  "quantity_incoming", "reorder_point", "created_at", "updated_at"),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# advance_day: one simulated day of changes, all derived from (seed, day) and the current tables
# ---------------------------------------------------------------------------------------------------

# status -> (next status, probability per day); older orders are pushed along (see _status_changes)
NEXT_STATUS = {
    "pending": ("confirmed", 0.75),
    "confirmed": ("processing", 0.70),
    "processing": ("shipped", 0.65),
    "shipped": ("delivered", 0.35),
}
CANCEL_PROBABILITY = {"pending": 0.05, "confirmed": 0.02}


@dataclass
class State:
    """The generator_state row: the seed, the simulated clock and the id counters."""

    seed: int
    world_date: dt.date
    orders_per_day: float
    next_order_id: int
    next_order_item_id: int
    next_pricing_id: int


def _load_state(cur: psycopg2.extensions.cursor) -> State:
    cur.execute(
        f"""
        select seed, world_date, orders_per_day, next_order_id, next_order_item_id, next_pricing_id
        from {STATE_TABLE} where id = 1 for update
        """
    )
    row = cur.fetchone()
    if row is None:
        raise RuntimeError("generator_state is empty: run generate() first")
    return State(row[0], row[1], float(row[2]), row[3], row[4], row[5])


def _save_state(cur: psycopg2.extensions.cursor, state: State) -> None:
    cur.execute(
        f"""
        update {STATE_TABLE}
        set world_date = %s, next_order_id = %s, next_order_item_id = %s, next_pricing_id = %s
        where id = 1
        """,
        (state.world_date, state.next_order_id, state.next_order_item_id, state.next_pricing_id),
    )


def _to_ts(sec: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=sec)


def _epoch(cur: psycopg2.extensions.cursor, sql: str, params: Sequence = ()) -> int | None:
    cur.execute(sql, params)
    row = cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _day_time(rng: random.Random, day: int) -> int:
    return day * DAY + business_time(rng)


def _status_changes(cur: psycopg2.extensions.cursor, rng: random.Random, day: int) -> tuple[int, int]:
    """Move open orders along the lifecycle and settle payments; returns (status, payment) change counts."""
    cur.execute(
        """
        select id, status, payment_method, payment_status, order_date
        from orders
        where status in ('pending', 'confirmed', 'processing', 'shipped') and order_date < %s
        order by id
        """,
        (day_text(day),),
    )
    updates: list[tuple[int, str, str, dt.datetime]] = []
    for order_id, status, method, pay, order_date in cur.fetchall():
        age = day - day_number(order_date)
        new_status = status
        if rng.random() < CANCEL_PROBABILITY.get(status, 0.0) and age < 10:
            new_status = "cancelled"
            pay = "refunded" if pay == "paid" else "cancelled"
        else:
            nxt, probability = NEXT_STATUS[status]
            if age >= 12 or rng.random() < probability:
                new_status = nxt
                if nxt == "confirmed" and method in UPFRONT_METHODS:
                    pay = "paid"
        if new_status != status:
            updates.append((order_id, new_status, pay, _to_ts(_day_time(rng, day))))
    status_changes = len(updates)
    changed = {u[0] for u in updates}
    cur.execute(
        """
        select id, payment_method, order_date
        from orders
        where payment_status = 'pending' and status in ('confirmed', 'processing', 'shipped', 'delivered')
          and payment_method in ('boleto', 'prazo') and order_date < %s
        order by id
        """,
        (day_text(day),),
    )
    for order_id, method, order_date in cur.fetchall():
        age = day - day_number(order_date)
        due = (method == "boleto" and rng.random() < 0.3) or (
            method == "prazo" and age >= 30 and rng.random() < 0.25
        )
        if due and order_id not in changed:
            cur_status = None  # keep status, only the payment moves
            updates.append((order_id, cur_status, "paid", _to_ts(_day_time(rng, day))))
    psycopg2.extras.execute_values(
        cur,
        """
        update orders o
        set status = coalesce(v.status, o.status), payment_status = v.payment_status, updated_at = v.updated_at
        from (values %s) as v (id, status, payment_status, updated_at)
        where o.id = v.id
        """,
        updates,
        template="(%s::bigint, %s::text, %s::text, %s::timestamptz)",
        page_size=5000,
    )
    return status_changes, len(updates) - status_changes


def _tier_changes(cur: psycopg2.extensions.cursor, rng: random.Random, day: int) -> list[int]:
    """One to three active customers move one tier up (mostly) or down, with a matching credit limit."""
    cur.execute("select id, tier from customers where status = 'active' order by id")
    customers = cur.fetchall()
    if not customers:
        return []
    changed = []
    for customer_id, tier in rng.sample(customers, min(len(customers), rng.randint(1, 3))):
        t = TIERS.index(tier)
        t = t + 1 if t == 0 or (t < 3 and rng.random() < 0.6) else t - 1
        lo, hi = TIER_CREDIT[t]
        cur.execute(
            "update customers set tier = %s, credit_limit = %s, updated_at = %s where id = %s",
            (TIERS[t], rng.randrange(lo, hi, 1000), _to_ts(_day_time(rng, day)), customer_id),
        )
        changed.append(customer_id)
    return sorted(changed)


def _price_changes(
    cur: psycopg2.extensions.cursor, rng: random.Random, day: int, state: State
) -> tuple[list[int], list[int]]:
    """Re-price one to three products: close every open row (effective_to = day - 1) and open new rows
    from `day`. Returns (closed pricing ids, new pricing ids)."""
    cur.execute(
        """
        select pr.product_id, pr.id, pr.customer_tier, pr.price, pr.effective_from
        from pricing pr
        join products p on p.id = pr.product_id and p.status = 'active'
        where pr.effective_to is null
        order by pr.product_id, pr.id
        """
    )
    open_rows: dict[int, list[tuple]] = {}
    for row in cur.fetchall():
        open_rows.setdefault(row[0], []).append(row)
    today = EPOCH + dt.timedelta(days=day)
    candidates = [pid for pid, rows in open_rows.items() if all(r[4] < today for r in rows)]
    closed, opened = [], []
    for product_id in rng.sample(candidates, min(len(candidates), rng.randint(1, 3))):
        factor = rng.uniform(0.95, 1.10)
        at = _to_ts(_day_time(rng, day))
        for _, pricing_id, tier, price, _ in open_rows[product_id]:
            new_price = max(1, round(int(price * 100) * factor))
            cur.execute(
                "update pricing set effective_to = %s, updated_at = %s where id = %s",
                (today - dt.timedelta(days=1), at, pricing_id),
            )
            cur.execute(
                "insert into pricing values (%s, %s, %s, %s, %s, null, %s, %s)",
                (state.next_pricing_id, product_id, tier, money(new_price), today, at, at),
            )
            closed.append(pricing_id)
            opened.append(state.next_pricing_id)
            state.next_pricing_id += 1
    return closed, opened


def _current_catalog(cur: psycopg2.extensions.cursor, seed: int, day: int) -> Catalog:
    """Catalog arrays for today: prices effective today (tier price, else list price), active products."""
    cur.execute("select id, status, package_size from products order by id")
    products = cur.fetchall()
    popularity = popularity_weights(seed, max((p[0] for p in products), default=0))
    cur.execute(
        """
        select product_id, customer_tier, price from pricing
        where effective_from <= %s and (effective_to is null or effective_to >= %s)
        """,
        (day_text(day), day_text(day)),
    )
    prices: dict[int, dict[str | None, int]] = {}
    for product_id, tier, price in cur.fetchall():
        prices.setdefault(product_id, {})[tier] = int(price * 100)
    cat = Catalog()
    never = day + 10**6
    for product_id, status, package in products:
        by_tier = prices.get(product_id, {})
        if None not in by_tier:
            continue
        tier_prices = tuple(by_tier.get(t, by_tier[None]) for t in TIERS)
        cat.ids.append(product_id)
        cat.popularity.append(popularity[product_id - 1] if status == "active" else 0.0)
        cat.end_day.append(never if status == "active" else day - 1)
        cat.pack_qty.append(max(2.0, 24.0 / max(1.0, pack_size(package) / 20)))
        cat.change_day.append(never)
        cat.prices_before.append(tier_prices)  # type: ignore[arg-type]
        cat.prices_after.append(tier_prices)  # type: ignore[arg-type]
    return cat


def _current_clientele(cur: psycopg2.extensions.cursor, seed: int, day: int) -> Clientele:
    """Active customers with today's tier."""
    cur.execute(
        "select id, tier, uf, region, payment_terms, address, city from customers where status = 'active' order by id"
    )
    rows = cur.fetchall()
    activity = activity_weights(seed, max((r[0] for r in rows), default=0))
    cl = Clientele()
    for customer_id, tier, uf, region, terms, address, city in rows:
        t = TIERS.index(tier)
        cl.ids.append(customer_id)
        cl.tier.append(t)
        cl.weight.append(TIER_ORDER_WEIGHT[t] * activity[customer_id - 1])
        cl.start_day.append(day)
        cl.end_day.append(day)
        cl.icms_bp.append(UF_INFO[uf][2])
        cl.shipping_base.append(REGION_SHIPPING[region])
        cl.term_days.append(TERM_DAYS.get(terms, 30))
        cl.address.append(copy_text(f"{address}, {city} - {uf}"))
    return cl


def _new_orders(
    cur: psycopg2.extensions.cursor, rng: random.Random, day: int, state: State
) -> tuple[int, int]:
    """Today's orders at about the historical rate (with weekday seasonality)."""
    cat = _current_catalog(cur, state.seed, day)
    cl = _current_clientele(cur, state.seed, day)
    if not cat.ids or not cl.ids or not any(cat.popularity):
        return 0, 0
    mean_weight = sum(WEEKDAY_FACTOR) / 7 * sum(MONTH_FACTOR) / 12
    n = max(1, round(state.orders_per_day * 1.1 * day_weight(day) / mean_weight * rng.uniform(0.85, 1.15)))
    sink = CopySink(cur)
    orders = CopyBuffer(sink, "orders", ORDER_COLUMNS)
    items = CopyBuffer(sink, "order_items", ITEM_COLUMNS)
    ids = IdCounters(state.next_order_id, state.next_order_item_id)
    writer = OrderWriter(cat, cl, orders, items, ids)
    pool = CustomerPool(cl)
    pool.prepare(day)
    cutoff = (day + 1) * DAY - 1
    lines = 0
    for created in sorted(_day_time(rng, day) for _ in range(n)):
        lines += writer.write(rng, pool.pick(rng), day, created, cutoff)
    orders.flush()
    items.flush()
    state.next_order_id, state.next_order_item_id = ids.order, ids.item
    return orders.rows, lines


def _inventory_changes(cur: psycopg2.extensions.cursor, rng: random.Random, day: int) -> int:
    """Stock moves: picking lowers availability, receipts turn incoming stock into available stock."""
    cur.execute(
        "select id, quantity_available, quantity_reserved, quantity_incoming, reorder_point from inventory order by id"
    )
    rows = cur.fetchall()
    if not rows:
        return 0
    updates = []
    for inv_id, avail, reserved, incoming, reorder in rng.sample(
        rows, min(len(rows), max(3, len(rows) // 40))
    ):
        if incoming and rng.random() < 0.4:
            avail, incoming = avail + incoming, 0
        else:
            picked = min(avail, rng.randint(1, max(2, reorder // 4)))
            avail -= picked
            reserved = max(0, reserved + rng.randint(-picked, picked))
            if avail < reorder and incoming == 0:
                incoming = reorder * rng.randint(2, 6)
        updates.append((inv_id, avail, reserved, incoming, _to_ts(_day_time(rng, day))))
    psycopg2.extras.execute_values(
        cur,
        """
        update inventory i
        set quantity_available = v.a, quantity_reserved = v.r, quantity_incoming = v.inc, updated_at = v.ts
        from (values %s) as v (id, a, r, inc, ts)
        where i.id = v.id
        """,
        updates,
        template="(%s::bigint, %s::int, %s::int, %s::int, %s::timestamptz)",
    )
    return len(updates)


def _late_updates(
    cur: psycopg2.extensions.cursor, rng: random.Random, hwm: dict[str, int | None]
) -> list[dict]:
    """Changes that arrive with an updated_at up to 36 h *older* than the table's previous high-water mark
    (replica lag / clock skew): incremental loads that filter `updated_at > last max` miss them unless they
    use a lookback window. Always within 48 h of the previous high-water mark."""
    done: list[dict] = []
    plan = ["orders", "inventory", "orders", "inventory"][: rng.randint(2, 4)]
    for table in plan:
        mark = hwm.get(table)
        if mark is None:
            continue
        late = mark - rng.randint(10 * 60, 36 * HOUR)
        taken = [d["id"] for d in done if d["table"] == table] or [0]
        extra = "and status in ('shipped', 'delivered')" if table == "orders" else ""
        cur.execute(
            f"""
            select id from {table}
            where updated_at < %s and updated_at >= %s and not (id = any(%s)) {extra}
            order by id limit 500
            """,
            (_to_ts(late), _to_ts(late - 60 * DAY), taken),
        )
        candidates = [r[0] for r in cur.fetchall()]
        if not candidates:
            continue
        row_id = rng.choice(candidates)
        if table == "orders":
            cur.execute(
                """
                update orders
                set notes = coalesce(notes || ' | ', '') || %s,
                    payment_status = case when payment_status = 'pending' then 'paid' else payment_status end,
                    updated_at = %s
                where id = %s
                """,
                (rng.choice(LATE_NOTES), _to_ts(late), row_id),
            )
        else:
            cur.execute(
                "update inventory set quantity_incoming = quantity_incoming + %s, updated_at = %s where id = %s",
                (rng.randint(10, 200), _to_ts(late), row_id),
            )
        done.append(
            {
                "table": table,
                "id": row_id,
                "updated_at": _to_ts(late),
                "previous_high_water_mark": _to_ts(mark),
            }
        )
    return done


def _hard_delete(cur: psycopg2.extensions.cursor, rng: random.Random, day: int) -> list[int]:
    """Exactly one pending or cancelled order (placed before today) vanishes with its lines."""
    cur.execute(
        """
        select id from orders
        where status in ('pending', 'cancelled') and order_date < %s
        order by id desc limit 200
        """,
        (day_text(day),),
    )
    candidates = [r[0] for r in cur.fetchall()]
    if not candidates:
        return []
    order_id = rng.choice(candidates)
    cur.execute("delete from orders where id = %s", (order_id,))  # order_items go by on delete cascade
    return [order_id]


def _advance_one(conn: psycopg2.extensions.connection) -> dict:
    """Apply one simulated day inside the caller's transaction and return its summary."""
    with conn.cursor() as cur:
        state = _load_state(cur)
        day = day_number(state.world_date) + 1
        date = EPOCH + dt.timedelta(days=day)
        rng = random.Random(f"{state.seed}:day:{date.isoformat()}")
        hwm = {
            t: _epoch(cur, f"select extract(epoch from max(updated_at)) from {t}")
            for t in ("orders", "inventory")
        }
        status_changes, payment_changes = _status_changes(cur, rng, day)
        tier_changes = _tier_changes(cur, rng, day)
        closed, opened = _price_changes(cur, rng, day, state)
        new_orders, new_lines = _new_orders(cur, rng, day, state)
        inventory_changes = _inventory_changes(cur, rng, day)
        late = _late_updates(cur, rng, hwm)
        deleted = _hard_delete(cur, rng, day)
        state.world_date = date
        _save_state(cur, state)
    return {
        "date": date,
        "new_orders": new_orders,
        "new_order_lines": new_lines,
        "status_changes": status_changes,
        "payment_changes": payment_changes,
        "tier_changes": tier_changes,
        "price_changes": closed,
        "new_price_ids": opened,
        "inventory_changes": inventory_changes,
        "late_updates": len(late),
        "late_update_rows": late,
        "deleted_order_ids": deleted,
    }


# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------


def generate(
    url: str,
    *,
    scale: Scale = Scale(),
    seed: int = 42,
    as_of: dt.date | None = None,
    reset: bool = True,
    progress: Progress | None = None,
) -> None:
    """Create the schema (running schema.sql; reset=True drops the 7 tables first) and fill it."""
    as_of = as_of or dt.datetime.now(dt.UTC).date()
    as_of_day = day_number(as_of)
    start_day = as_of_day - scale.history_days
    cutoff = (as_of_day + 1) * DAY - 1
    report = progress or (lambda _stage, _rows: None)
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            _create_schema(cur, reset)
            restore = _detach_constraints(cur)
            used: set[str] = set()
            suppliers, mfr_supplier = _supplier_rows(seed, scale, start_day, cutoff, used)
            report("suppliers", _copy_rows(cur, "suppliers", COLUMNS["suppliers"], suppliers))
            customers, clientele = _customer_rows(seed, scale, start_day, as_of_day, used)
            report("customers", _copy_rows(cur, "customers", COLUMNS["customers"], customers))
            products, specs = _product_rows(seed, scale, start_day, as_of_day, mfr_supplier)
            report("products", _copy_rows(cur, "products", COLUMNS["products"], products))
            pricing, catalog = _pricing_rows(seed, specs, start_day, as_of_day)
            report("pricing", _copy_rows(cur, "pricing", COLUMNS["pricing"], pricing))
            inventory = _inventory_rows(seed, scale, specs, catalog, as_of_day)
            report("inventory", _copy_rows(cur, "inventory", COLUMNS["inventory"], inventory))
            del suppliers, customers, products, inventory
            sink = CopySink(cur, background=True)
            try:
                orders = CopyBuffer(sink, "orders", ORDER_COLUMNS, chunk=CHUNK_ROWS // 2)
                items = CopyBuffer(sink, "order_items", ITEM_COLUMNS)
                ids = IdCounters()
                writer = OrderWriter(catalog, clientele, orders, items, ids)
                rate = _write_orders(seed, scale, writer, start_day, as_of_day, progress)
                orders.flush()
                items.flush()
            finally:
                sink.close()
            report("orders", orders.rows)
            report("order_items", items.rows)
            for stmt in restore:
                cur.execute(stmt)
            report("indexes and foreign keys", len(restore))
            cur.execute(f"delete from {STATE_TABLE}")  # reset=False regenerates the state too
            cur.execute(
                f"insert into {STATE_TABLE} values (1, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (seed, as_of, as_of, round(rate, 3), ids.order, ids.item, len(pricing) + 1,
                 json.dumps(asdict(scale), sort_keys=True), RNG_SCHEME),
            )  # fmt: skip
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"analyze {', '.join(TABLES)}, {STATE_TABLE}")
        report("analyze", 0)
    finally:
        conn.close()


def world_date(url: str) -> dt.date:
    """The simulated 'today' of the database."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"select world_date from {STATE_TABLE} where id = 1")
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        raise RuntimeError("generator_state is empty: run generate() first")
    return row[0]


def advance_day(url: str, *, days: int = 1, progress: Progress | None = None) -> list[dict]:
    """Advance the simulated world by `days` days; returns one summary dict per day (counts of each change)."""
    summaries = []
    conn = connect(url)
    try:
        for _ in range(days):
            summary = _advance_one(conn)
            conn.commit()
            summaries.append(summary)
            if progress:
                progress(f"advance {summary['date']}", summary["new_order_lines"])
    finally:
        conn.close()
    return summaries


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------


def _print_progress(stage: str, rows: int) -> None:
    print(f"  {stage}: {rows:,} rows", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loaders.operational.generator", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="(re)create and fill the operational database")
    gen.add_argument("--url", required=True)
    defaults = Scale()
    for name in ("customers", "products", "suppliers", "order_lines", "history_days", "warehouses"):
        gen.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--as-of", type=dt.date.fromisoformat, default=None)
    adv = sub.add_parser("advance", help="advance the simulated clock")
    adv.add_argument("--url", required=True)
    adv.add_argument("--days", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "generate":
        import time

        scale = Scale(
            args.customers,
            args.suppliers,
            args.products,
            args.order_lines,
            args.history_days,
            args.warehouses,
        )
        started = time.perf_counter()
        generate(args.url, scale=scale, seed=args.seed, as_of=args.as_of, progress=_print_progress)
        print(f"generated in {time.perf_counter() - started:.1f}s; world date {world_date(args.url)}")
    else:
        for summary in advance_day(args.url, days=args.days):
            print(json.dumps(summary, default=str, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
