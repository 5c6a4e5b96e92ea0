#!/usr/bin/env python3
"""gen_retail.py - deterministic omni-channel retail data set for cdp.

Generates the event stream of a fictional DACH fashion/home retailer (some GB,
US and FR customers) as Segment-spec messages, one compact JSON object per line
(UTF-8), or the matching CRM export as CSV.  It feeds the demo, the larger
regression scenarios and the ingestion/stitching benchmarks, so it is seeded
(same seed + same --customers = same bytes, whatever --jobs), streams, and
scales to millions of customers (pure standard library).

Usage:
  gen_retail.py [--customers N] [--seed S] [--start 2026-09-01] [--days 60]
                [--format ndjson|crm-csv] [--stats] [--jobs J] > out

  --customers N   real persons (default 200); ~19 messages each on average
  --seed S        random seed (default 1)
  --start, --days the time window (UTC) the messages fall into
  --format        ndjson (default): the messages; crm-csv: the CRM export
                  (crm_id,first_name,last_name,email,phone,country) of the same
                  persons, with the same messy values the crm identifies carry
  --stats         JSON summary on stderr: persons; the ground truth
                  (persons_with_usable_identifier; expected_profiles = what a
                  perfect stitcher with shared-device protection and junk
                  filtering finds: per person, the connected groups of its own
                  identifiers); the message mix by type and channel; re-sends,
                  malformed lines, junk values, shared devices
  --jobs J        worker processes (default: min(4, CPUs)); output is identical

Cost: ~180 CPU-seconds and ~0.35 GB per worker for 1M customers (19M lines,
7 GB); memory is about one day of output per worker.

The story, channel by channel (channel = context.library.name):
  web        anonymous cookie visitors (page Home/Category/Product, track
             Product Viewed/Added under a UUID anonymousId); account holders
             log in at some point (identify userId + anonymousId +
             traits.email) and order (track Order Completed); some use 2-3
             browsers, each linked by a login; sign-ups in the window send a
             full identify, Signed Up and sometimes alias(previousId=anonId);
             business customers send group (groupId is NOT a person key).
  ios/android  Application Opened, screen, track with context.device.id and
             context.device.advertisingId (IDFA upper-case when ATT allows,
             GAID lower-case), anonymousId per install, userId after login.
             ~1 in 200 customers share a family tablet: one device id, two
             userIds (a stitcher must not merge them).
  newsletter identify with only traits.email (+first_name); track Newsletter
             Subscribed / Email Opened / Email Clicked keyed by
             context.traits.email (weekly campaign on Thursdays).
  pos        track Order Completed with properties.loyalty_id and
             context.traits.loyalty_id, no userId; loyalty sign-ups send an
             identify with traits.loyalty_id + traits.email (+ phone).
  crm        nightly (02:00-03:00) identify (initial load over the first 7
             nights, then new and changed records): traits.crm_id "K-<n>", messy
             traits.email / traits.phone (case, spaces, full-width, NFD,
             punycode vs Unicode domains, invalid typos), userId when the
             person has an online account, traits.loyalty_id for members;
             ~3% of persons have a duplicate CRM record (second crm_id).
  support    track Ticket Opened / Ticket Closed keyed by context.traits.email
             and sometimes context.traits.phone.
Dirt: ~1% exact re-sends (same line, same messageId); ~0.5% of messages carry
junk identifiers ("null", "undefined", "0", "-1", "anonymous", "[object
Object]", "" as userId, test@test.com / test@example.com, the all-zero device
id) next to a real anonymousId; ~0.3% extra malformed lines (missing type,
type "purchase", bad timestamp, no identifier, traits not an object); a few %
of app/POS messages arrive minutes late (stream order = arrival order).

Identifier paths a stitcher should map (see scripts/data/README.md):
  userId -> user_id, anonymousId / previousId -> anonymous_id,
  traits.email, context.traits.email -> email,
  traits.phone, context.traits.phone -> phone,
  context.device.id, context.device.advertisingId -> device_id,
  traits.crm_id -> crm_id,
  traits.loyalty_id, context.traits.loyalty_id, properties.loyalty_id -> loyalty_id.

How: a pre-pass draws every person (from a hash of seed and number) and schedules their
sessions into per-day buckets of packed integers; each day is then rendered
(seeded per day) from templates, sorted by arrival and written.  Every choice
that affects identifiers is made in the pre-pass, which also computes the
ground truth (connected identifier components per person).
"""
import argparse, array, ctypes, csv, hashlib, json, os, random, re, sys, unicodedata
from collections import Counter, deque
from datetime import date, timedelta
from multiprocessing import get_context

# ---------------------------------------------------------------- reference data
FIRST_DE = ("Anna Lena Lea Sophie Marie Hannah Emma Mia Laura Julia Sarah Katharina Jana Paula "
            "Jürgen Jörg Günter Björn Max Paul Lukas Leon Felix Jonas Tim Jan Niklas Stefan "
            "Thomas Michael Andreas Sebastian Tobias Uwe Sören Bärbel Dörte Käthe Anna-Lena").split()
LAST_DE = ("Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch "
           "Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann "
           "Hartmann Lange Schmitt Werner Krause Meier Lehmann Köhler Groß Weiß Jäger Böhm Kühn "
           "Fuchs Vogel Günther Roth").split()
LAST_AT = "Gruber Huber Bauer Wagner Pichler Steiner Moser Mayer Hofer Leitner Müller Wimmer Fröhlich".split()
FIRST_CH = "Noah Luca Leon Mia Emma Lara Lea Nina Reto Urs Beat Regula Ursula Jürg Flurina".split()
LAST_CH = "Müller Meier Schmid Keller Weber Huber Schneider Steiner Gerber Brunner Baumann Frei Bühler".split()
FIRST_GB = "Oliver George Harry Jack Charlie Olivia Amelia Isla Ava Emily Sophie James Thomas Lucy Grace".split()
LAST_GB = "Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson Evans Walker".split()
FIRST_US = "Liam Noah Emma Olivia Ava Sophia Mason Ethan Madison Ashley Michael Jessica".split()
LAST_US = "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Anderson Moore".split()
FIRST_FR = "Léa Chloé Manon Camille Zoé Hugo Louis Lucas Gabriel Jules Théo Noémie Amélie François Hélène".split()
LAST_FR = "Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent Lefèvre".split()

# code: weight, calling code, locale, first, last, cities (name, area code, subscriber digits
#       [, allowed first digits]), mobile (prefix, digits[, first digits]), mail domains (weighted)
COUNTRIES = {
    "DE": (62, "49", "de-DE", FIRST_DE, LAST_DE,
           [("Berlin", "30", 7), ("München", "89", 7), ("Hamburg", "40", 7), ("Köln", "221", 7),
            ("Frankfurt am Main", "69", 7), ("Stuttgart", "711", 7), ("Düsseldorf", "211", 7),
            ("Leipzig", "341", 7), ("Nürnberg", "911", 7), ("Dresden", "351", 7)],
           [("151", 8), ("152", 8), ("157", 8), ("160", 8), ("170", 8), ("171", 8), ("172", 8),
            ("175", 8), ("176", 8), ("177", 8), ("178", 8), ("179", 8)],
           "gmx.de gmx.de web.de web.de t-online.de gmail.com gmail.com outlook.de yahoo.de posteo.de freenet.de".split()),
    "AT": (12, "43", "de-AT", FIRST_DE, LAST_AT,
           [("Wien", "1", 7), ("Graz", "316", 7), ("Linz", "732", 7), ("Salzburg", "662", 7)],
           [("664", 7), ("676", 7), ("699", 7)], "gmx.at aon.at gmail.com chello.at a1.net".split()),
    "CH": (10, "41", "de-CH", FIRST_CH, LAST_CH,
           [("Zürich", "44", 7), ("Bern", "31", 7), ("Basel", "61", 7), ("Luzern", "41", 7)],
           [("79", 7), ("78", 7), ("76", 7)], "bluewin.ch gmx.ch gmail.com sunrise.ch".split()),
    "GB": (7, "44", "en-GB", FIRST_GB, LAST_GB,
           [("London", "20", 8, "378"), ("Manchester", "161", 7), ("Birmingham", "121", 7, "234567")],
           [("790", 7), ("792", 7), ("795", 7), ("798", 7)], "gmail.com hotmail.co.uk btinternet.com".split()),
    "US": (5, "1", "en-US", FIRST_US, LAST_US,
           [("New York", "212", 7), ("San Francisco", "415", 7), ("Chicago", "312", 7), ("Boston", "617", 7)],
           [], "gmail.com gmail.com yahoo.com outlook.com".split()),
    "FR": (4, "33", "fr-FR", FIRST_FR, LAST_FR,
           [("Paris", "1", 8), ("Lyon", "4", 8), ("Lille", "3", 8)],
           [("6", 8, "245678"), ("7", 8, "345678")], "orange.fr free.fr gmail.com laposte.net".split()),
}
COUNTRY_PICK = [k for k, v in COUNTRIES.items() for _ in range(v[0])]
US_EXCHANGES = [str(n) for n in range(200, 1000) if n % 100 != 11]
TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "è": "e",
                          "ç": "c", "ë": "e", "ï": "i", "ô": "o", "-": ""})
FULLWIDTH = {i: i + 0xFEE0 for i in range(0x21, 0x7F)}
JUNK_USER_IDS = ["null", "undefined", "0", "-1", "anonymous", "[object Object]", ""]
JUNK_EMAILS = ["test@test.com", "test@example.com"]
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
INVALID_PHONES = ["12", "hello", "0000", "+49 30", "n/a", "-", "+999 1234567"]
TIERS = ["bronze", "silver", "gold", "platinum"]
PRIORITIES = ["low", "normal", "normal", "normal", "high", "critical"]
SUBJECTS = ["Lieferung verspätet", "Rücksendung", "Falsche Größe", "Rechnung", "Gutschein einlösen",
            "Where is my order?", "Konto gesperrt", "Artikel beschädigt"]
INDUSTRIES = ["Gastronomie", "Handwerk", "Hotellerie", "Büro", "Praxis"]

def _catalog():
    """~300 products as pre-rendered JSON fragments (fixed, independent of --seed)."""
    r = random.Random(20260901)
    kinds = {"Damen": ["Wollpullover", "Sommerkleid", "Bluse", "Jeans Slim Fit", "Mantel"],
             "Herren": ["Hemd", "Chino", "Strickjacke", "Sakko", "Jeans Regular"],
             "Schuhe": ["Sneaker", "Stiefelette", "Laufschuh", "Sandale"],
             "Kinder": ["Regenjacke", "Latzhose", "Schlafanzug"],
             "Wohnen": ["Kissenbezug", "Bettwäsche", "Kaffeebecher", "Stehlampe", "Handtuch"],
             "Sport": ["Yogamatte", "Trainingsjacke", "Funktionsshirt"]}
    out = []
    for n in range(300):
        cat = r.choice(list(kinds))
        name = r.choice(kinds[cat])
        price = r.choice([9, 14, 19, 24, 29, 39, 49, 59, 79, 99, 129, 179]) + 0.95
        sku = f"{cat[:2].upper()}-{1000 + n}-{r.choice(['XS', 'S', 'M', 'L', 'XL', 'OS'])}"
        out.append((f"P-{10001 + n}", price, name, cat.lower(), f'"product_id":"P-{10001 + n}","sku":"{sku}",'
                    f'"name":"{name}","category":"{cat}","price":{price:.2f},"currency":"EUR"'))
    return out
CATALOG = _catalog()
HMS = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400)]
def _hours(weights):
    return [h for h, w in enumerate(weights) for _ in range(w)]
WEB_HOURS = _hours([1, 1, 1, 1, 1, 1, 2, 4, 5, 5, 5, 5, 6, 6, 5, 5, 5, 6, 8, 10, 12, 12, 9, 4])
SHOP_HOURS = _hours([0] * 9 + [3, 4, 5, 6, 5, 5, 6, 7, 8, 8, 6] + [0] * 4)   # Mon-Sat 9-20
OFFICE_HOURS = _hours([0] * 8 + [4, 5, 5, 5, 3, 4, 5, 5, 4, 3] + [0] * 6)   # 8-18

# channels (index into CHANNELS) and session kinds
CHANNELS = ["web", "ios", "android", "pos", "crm", "support", "newsletter"]
WEB, IOS, ANDROID, POS, CRM, SUPPORT, NEWSLETTER = range(7)
K_WEB, K_APP, K_NL, K_POS, K_CRM, K_SUP = range(6)
ANON, LOGIN, KNOWN, SIGNUP = range(4)   # web/app session states
LATE = [0.002, 0.03, 0.03, 0.02, 0.0, 0.0, 0.0]   # share of messages delivered minutes late
VERSIONS = {WEB: "3.2.1", IOS: "4.1.2", ANDROID: "4.1.2", POS: "7.3.0", CRM: "2.0", SUPPORT: "1.8", NEWSLETTER: "1.0"}

class Rng(random.Random):
    """Mersenne Twister with cheaper choice/randrange (float based; the tiny bias does not matter)."""
    def choice(self, seq):
        return seq[int(self.random() * len(seq))]
    def randrange(self, a, b=None):
        return int(self.random() * a) if b is None else a + int(self.random() * (b - a))
    def randint(self, a, b):
        return a + int(self.random() * (b - a + 1))

OPT = None   # parsed options; module-global so that forked workers see them
R = Rng()

def mix(*xs):
    """A stable 64-bit hash of integers (splitmix64 finaliser)."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ x) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return h ^ (h >> 29)

def scramble(c, modulus, a=2654435761):
    """A bijection of customer numbers onto range(modulus) (a is a prime, so coprime to it):
    unique phone and loyalty numbers that do not look sequential."""
    return (c * a + 7919) % modulus

def uuid(*parts, upper=False):
    h = hashlib.blake2b(repr((OPT.seed,) + parts).encode(), digest_size=16).hexdigest()
    u = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
    return u.upper() if upper else u

# ---------------------------------------------------------------- persons
class Person:
    __slots__ = ("c", "cc", "first", "last", "city", "area", "loc", "email", "phone", "acc", "sd",
                 "browsers", "app", "app_anon", "nl", "nsd", "member", "msd", "tickets", "biz",
                 "fam", "crm", "dup", "loyalty")

def person(c, level=2):
    """Everything about person c that does not depend on the day, from (seed, c) alone.
    Rendering re-draws the person for every session, so it is drawn in levels: 0 country, city
    and accounts (most sessions), 1 + names, e-mail, phone, 2 + channels (pre-pass, CRM export).
    Draws are successive "digits" of a 512-bit hash (h, x = divmod(h, n) draws x from
    range(n)): far cheaper than seeding a generator for every session."""
    h = int.from_bytes(hashlib.blake2b(b"%d/%d" % (OPT.seed, c), digest_size=64).digest(), "little")
    p = Person()
    p.c = c
    pair = (c - 1) // 2
    partner = c + 1 if c % 2 else c - 1
    p.fam = pair + 1 if partner <= OPT.customers and pair % 100 == 7 else 0   # customers 15+16, 215+216, ...
    fam = [mix(OPT.seed, pair, k) for k in range(3)] if p.fam else None      # same country, surname, city
    h, x = divmod(h, len(COUNTRY_PICK))
    p.cc = cc = COUNTRY_PICK[fam[0] % len(COUNTRY_PICK) if fam else x]
    _, _, p.loc, firsts, lasts, cities, mobiles, domains = COUNTRIES[cc]
    h, x = divmod(h, len(cities))
    city = cities[fam[2] % len(cities) if fam else x]
    p.city, p.area = city[0], city[1]
    h, x = divmod(h, 100)
    p.acc = p.fam > 0 or x < 55                                    # online account u<c>
    h, x = divmod(h, 100 * (OPT.days - 1))
    p.sd = x // 100 if p.acc and not p.fam and x % 100 < 12 else -1   # signs up in the window on day sd
    h, x = divmod(h, 10000)
    p.app = (1 if x // 100 < 45 else 2) if p.acc and x % 100 < 30 else 0   # 1 iOS, 2 Android
    h, x = divmod(h, 100)
    p.biz = p.acc and x < 4
    p.loyalty = f"L-{2 * 10 ** 7 + scramble(c, 8 * 10 ** 7, 2246822519)}"
    if level == 0:
        return p
    h, x = divmod(h, len(firsts))
    p.first = firsts[x]
    h, x = divmod(h, len(lasts))
    p.last = lasts[fam[1] % len(lasts) if fam else x]
    # e-mail: unique through the customer number; a few keep umlauts or use an umlaut domain
    f, l = p.first.lower().translate(TRANSLIT), p.last.lower().translate(TRANSLIT)
    h, x = divmod(h, 6)
    local = (f"{f}.{l}", f"{f[0]}.{l}", f"{f}{l}", f"{l}.{f}", f"{f}_{l}", f"{f}.{l[0]}")[x]
    h, x = divmod(h, len(domains))
    dom = domains[x]
    h, x = divmod(h, 100)
    if x < 4 and not (p.first + p.last).isascii():
        local = f"{p.first.lower()}.{p.last.lower()}".replace("ß", "ss").replace("-", "")
    elif x < 8 and not p.last.isascii() and cc in ("DE", "AT", "CH") and "ß" not in p.last:
        local, dom = f, f"{p.last.lower()}.{cc.lower()}"
    p.email = f"{local}{c}@{dom}"
    # phone: (calling code, trunk prefix, area/mobile prefix, subscriber); unique through c
    if cc == "US":
        x = scramble(c, len(US_EXCHANGES) * 10000)
        p.phone = ("1", "", p.area, US_EXCHANGES[x // 10000] + f"{x % 10000:04d}")
    else:
        h, x = divmod(h, 4 * len(mobiles))   # 3 in 4 give a mobile number
        area, n, *firsts = mobiles[x % len(mobiles)] if x >= len(mobiles) else city[1:]
        firsts = firsts[0] if firsts else "23456789"
        x = scramble(c, len(firsts) * 10 ** (n - 1))
        p.phone = (COUNTRIES[cc][1], "0", area, firsts[x // 10 ** (n - 1)] + f"{x % 10 ** (n - 1):0{n - 1}d}")
    if level == 1:
        return p
    # channels (only the pre-pass and the CRM export need them)
    D = OPT.days
    h, x = divmod(h, 2000)
    p.browsers = 1 if p.sd >= 0 else ([1] * 15 + [2] * 4 + [3])[x // 100] if p.acc and x % 100 < 90 else 0
    h, x = divmod(h, 100)
    p.app_anon = not p.acc and x < 5
    h, x = divmod(h, 400 * D)
    p.nl = x % 100 < 30
    p.nsd = x // 400 if p.nl and x // 100 % 4 == 0 else -1   # a quarter subscribe in the window
    h, x = divmod(h, 500 * (D - 1))
    p.member = x % 100 < 22
    p.msd = x // 500 if p.member and x // 100 % 5 == 0 else -1   # a fifth get their card in the window
    h, x = divmod(h, 400)
    p.tickets = (1, 1, 1, 2)[x // 100] if x % 100 < 8 else 0
    h, x = divmod(h, 10000)
    if not (p.acc or p.app_anon or p.nl or p.member or p.tickets) or (not p.acc and x % 100 < 40):
        p.browsers = 1   # anonymous visitors (who are also subscribers, members, ... stay unlinked)
    p.crm = p.acc or p.member
    p.dup = p.crm and p.sd < 0 and (not p.member or p.msd < 0 or p.acc) and x // 100 < 3
    return p

def fmt_phone(r, ph):
    """The phone written in one of the (valid) ways people and systems write it."""
    cc, tr, a, s = ph
    if cc == "1":
        return r.choice([f"+1 ({a}) {s[:3]}-{s[3:]}", f"+1 {a} {s[:3]} {s[3:]}", f"001 {a} {s[:3]} {s[3:]}",
                         f"+1-{a}-{s[:3]}-{s[3:]}", f"+1{a}{s}"])
    g = " ".join(s[i:i + 3] for i in range(0, len(s), 3))
    opts = [f"+{cc} {a} {s}", f"00{cc} {a} {s}", f"+{cc} {a} {g}", f"+{cc}{a}{s}"]
    if cc == "49":   # national formats only for DE: the default region
        opts += [f"0{a} {s}", f"0{a} {s}", f"0{a} {s}", f"({tr}{a}) {g}", f"0{a}/{s}", f"0{a}-{s}",
                 f"+49 (0){a} {s}", f"0{a} {g}"]
    return r.choice(opts)

def crm_record(p, dup):
    """The CRM row of person p (dup=1: the duplicate record) as the CRM stores it, messy."""
    r = Rng(mix(OPT.seed, p.c, 100 + dup))
    first, last = p.first, p.last
    x = r.random()
    if x < 0.06:
        last = last.upper()
    elif x < 0.10:
        last, first = last.translate(TRANSLIT), first.translate(TRANSLIT)
    elif x < 0.11:
        first, last = first.translate(FULLWIDTH), last.translate(FULLWIDTH)
    e, x = p.email, r.random()
    local, dom = e.split("@")
    if x < 0.03:
        email, email_ok = "", False
    elif x < 0.05:   # typos that make the address invalid
        email, email_ok = r.choice([f"{local}@@{dom}", f"{local}@", f"{local}@{dom.split('.')[0]}",
                                    f"{local} @{dom}", f"{local}@{dom.replace('.', '..')}", f"@{dom}",
                                    f"{local}@{dom}.", f"{local}@{dom.replace('.', ',')}"]), False
    else:
        email_ok = True
        y = r.random()
        if y < 0.25:
            email = "".join(ch.upper() if r.random() < 0.3 else ch for ch in e)
        elif y < 0.33:
            email = e.upper()
        elif y < 0.45:
            email = local.title() + "@" + dom.upper()
        elif y < 0.53:
            email = r.choice([f" {e} ", f"{e} ", f"  {e}"])
        elif y < 0.55:
            email = e.translate(FULLWIDTH)
        else:
            email = e
        if not dom.isascii() and r.random() < 0.4:
            email = email.rsplit("@", 1)[0] + "@" + dom.encode("idna").decode()
        elif not e.isascii() and r.random() < 0.1:
            email = unicodedata.normalize("NFD", email)
    x = r.random()
    if x < 0.2:
        phone, phone_ok = "", False
    elif x < 0.23:
        phone, phone_ok = r.choice(INVALID_PHONES), False
    else:
        phone, phone_ok = fmt_phone(r, p.phone), True
        if r.random() < 0.005:
            phone = phone.translate(FULLWIDTH)
    since = date(2012, 1, 1) + timedelta(days=r.randrange(5000)) if p.sd < 0 else OPT.start + timedelta(days=p.sd)
    return (f"K-{1000000 + 2 * p.c + dup}", first, last, email, email_ok, phone, phone_ok, since.isoformat(),
            r.choice(TIERS))

# ---------------------------------------------------------------- schedule (pre-pass)
def pack(day, sec, c, kind, sub=0, b=0, j=0):
    return day, (sec << 42) | (c << 16) | (j << 8) | (b << 6) | (sub << 3) | kind

def schedule(p, weekday):
    """Sessions of person p as (day, packed int), and the identifier links they create."""
    r, D, c = R, OPT.days, p.c
    S, links = [], []
    def days_from(lo, n, hours, shop=False):
        out = []
        while len(out) < n:
            d = r.randrange(lo, D)
            if shop and weekday[d] == 6:   # shops are closed on Sundays
                continue
            out.append((d, r.choice(hours) * 3600 + r.randrange(3600)))
        return sorted(out)
    def sessions(kind, node, nsess, lo, known_first, login_first=False, b=0, signup=False):
        ts = days_from(lo, nsess, WEB_HOURS)
        login = 0 if login_first else r.randrange(nsess)
        if signup:   # anonymous visits before the sign-up day, the sign-up, then logged in
            login = min(sum(d < p.sd for d, _ in ts), nsess - 1)
            ts[login] = (p.sd, min([s for d, s in ts[login:] if d == p.sd] + [ts[login][1]]))
        for i, (d, sec) in enumerate(ts):
            st = KNOWN if known_first or i > login else LOGIN if i == login else ANON
            if st == LOGIN and signup:
                st = SIGNUP
            if not p.acc:
                st = ANON
            S.append(pack(d, sec, c, kind, st, b))
            links.append((node, "U", "E") if st in (LOGIN, SIGNUP) else (node, "U") if st == KNOWN else (node,))
    lo = max(p.sd, 0)
    for b in range(p.browsers):
        n = r.choice([1, 1, 2, 2, 2, 3, 3, 4]) if p.acc else r.choice([1, 1, 1, 2, 2, 3])
        sessions(K_WEB, f"A{b}", n, 0, p.acc and p.sd < 0 and b == 0 and r.random() < 0.4,
                 b=b, signup=p.sd >= 0)
    if p.app:
        sessions(K_APP, "D", r.choice([2, 3, 4, 5, 6]), lo, p.sd < 0 and r.random() < 0.5)
    if p.app_anon:
        sessions(K_APP, "D", r.choice([1, 2, 3]), 0, False)
    if p.fam:
        sessions(K_APP, "T", r.choice([1, 2, 3]), 0, False, login_first=True, b=1)
    if p.nl:
        n = len(S)
        if p.nsd >= 0:
            S.append(pack(p.nsd, r.choice(WEB_HOURS) * 3600 + r.randrange(3600), c, K_NL, 0))
        for j, cd in enumerate(d for d in range(D) if weekday[d] == 3):
            if cd > p.nsd and r.random() < 0.35:
                od = cd if r.random() < 0.7 or cd + 1 >= D else cd + 1
                sec = 9 * 3600 + 300 + r.randrange(14 * 3600) if od == cd else r.choice(WEB_HOURS) * 3600 + r.randrange(3600)
                S.append(pack(od, sec, c, K_NL, 1, int(r.random() < 0.3), min(j, 255)))
        if len(S) > n:
            links.append(("E",))
    if p.member:
        visits = days_from(max(p.msd, 0), r.choice([1, 1, 2, 2, 3]), SHOP_HOURS, shop=True)
        if p.msd >= 0:   # sign-up at the first visit, which is on the sign-up day
            d = p.msd if weekday[p.msd] != 6 else p.msd + 1
            visits[0] = (min(d, D - 1), visits[0][1])
        for i, (d, sec) in enumerate(visits):
            signup = i == 0 and p.msd >= 0
            with_phone = signup and r.random() < 0.5
            S.append(pack(d, sec, c, K_POS, signup | with_phone << 1))
            links.append(("L", "E", "P") if with_phone else ("L", "E") if signup else ("L",))
    if p.crm:
        rec = crm_record(p, 0)
        if p.sd >= 0 or p.msd >= 0 and not p.acc:   # a new record the night after the sign-up
            created = p.sd + 1 if p.sd >= 0 else p.msd + 1
        else:   # the initial load of existing records runs over the first week's nights
            created = c % min(7, D)
        joined = p.msd + 1 if p.msd >= 0 else 0     # the day the loyalty id reaches the CRM
        base = ("K", "U") if p.acc else ("K",)
        base += ("E",) * rec[4] + ("P",) * rec[6]
        cr = lambda d, sub, b=0: S.append(pack(d, 7200 + r.randrange(3600), c, K_CRM, sub, b))
        cr(created, 2 * (p.member and joined <= created))
        links.append(base + ("L",) * (p.member and joined <= created))
        if p.member and joined > created:
            cr(joined, 3)
            links.append(base + ("L",))
        if r.random() < 0.08:
            d = r.randrange(created, D)
            cr(d, 1 | 2 * (p.member and joined <= d))
        if p.dup:
            dup = crm_record(p, 1)
            cr(created, 0, 1)
            links.append(("K2",) + ("E",) * dup[4] + ("P",) * dup[6])
    for j in range(p.tickets):
        d, sec = days_from(0, 1, OFFICE_HOURS)[0]
        phone = r.random() < 0.4
        S.append(pack(d, sec, c, K_SUP, phone, 0, j))
        close = sec + r.randrange(3600, 6 * 3600) if r.random() < 0.5 else None
        cd = d if close is not None and close < 86400 else d + r.randint(1, 3)
        if cd < D:
            S.append(pack(cd, close if cd == d else r.choice(OFFICE_HOURS) * 3600 + r.randrange(3600),
                          c, K_SUP, phone | 2, 0, j))
        links.append(("E", "P") if phone else ("E",))
    return S, links

def components(links):
    parent = {}
    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x
    for grp in links:
        for n in grp:
            parent.setdefault(n, n)
        root = find(grp[0])
        for n in grp[1:]:
            rn = find(n)
            if rn != root:
                parent[rn] = root
    return sum(1 for n in parent if parent[n] == n)

CHUNK = 20000

def prepass(rng):
    """Schedule customers rng=(lo, hi): per-day arrays of packed sessions, and ground truth."""
    lo, hi = rng
    buckets = [array.array("q") for _ in range(OPT.days)]
    kinds = Counter()
    R.seed(mix(OPT.seed, lo, 11))   # chunks are fixed (CHUNK customers), so this is deterministic
    for c in range(lo, hi):
        p = person(c)
        S, links = schedule(p, OPT.weekday)
        for d, x in S:
            buckets[d].append(x)
        k = components(links)
        kinds[bool(S), k, p.acc, p.sd >= 0, bool(p.app), p.nl, p.member, p.crm, p.dup, p.biz, bool(p.tickets),
              bool(p.fam), not (p.acc or p.nl or p.member or p.tickets)] += 1
    st = Counter()
    for (usable, k, *traits), n in kinds.items():
        st["persons"] += n
        st["persons_with_usable_identifier"] += usable * n
        st["expected_profiles"] += k * n
        st["persons_with_unlinkable_facets"] += (k > 1) * n
        for name, v in zip(TRAITS, traits):
            st["trait:" + name] += v * n
    st["shared_devices"] = st["trait:family_tablet"] // 2
    return buckets, st
TRAITS = ("account", "signed_up_in_window", "app", "newsletter", "loyalty_member", "crm_record",
          "duplicate_crm_record", "business", "support", "family_tablet", "anonymous_only")

# ---------------------------------------------------------------- rendering (one day)
def render_day(d, sessions):
    """Day d as UTF-8 chunks of lines in arrival order; and the day's statistics."""
    r = Rng(mix(OPT.seed, d, 99))
    out, st, pre = [], Counter(), (f"m-{OPT.seed}-{d}-", OPT.dayprefix[d], OPT.dayprefix[d + 1])
    def em(t, typ, rest, c, ch):
        """Queue one message (event time t in ms of day d) with its arrival time (delivery delay)."""
        x, s = r.random(), t // 1000
        ts = f"{pre[1 + (s >= 86400)]}{HMS[s % 86400]}.{t % 1000:03d}Z"
        out.append((t + (20 + int(x * 1500) if x >= LATE[ch] else 60000 + int(x / LATE[ch] * 1740000)),
                    f'{{"type":"{typ}","messageId":"{pre[0]}{len(out) + 1}","timestamp":"{ts}"{rest}}}\n'))
        st[typ, ch] += 1
    for x in sorted(sessions):
        kind, sub, b, j, c, sec = x & 7, x >> 3 & 7, x >> 6 & 3, x >> 8 & 255, x >> 16 & 0x3FFFFFF, x >> 42
        BUILDERS[kind](r, em, d, person(c, LEVEL[kind][sub]), sec * 1000 + r.randrange(1000), sub, b, j)
    out.sort()   # by arrival, then by line: total, hence deterministic
    for k in [k for k in st if isinstance(k, tuple)]:
        st[f"msg:{k[0]}/{CHANNELS[k[1]]}"] = st.pop(k)
    return emit_day(r, d, out, st)

jstr = json.encoder.encode_basestring   # a JSON string literal, non-ASCII kept (UTF-8 output)

def ctx(ch, extra=""):
    return f',"context":{{"library":{{"name":"{CHANNELS[ch]}","version":"{VERSIONS[ch]}"}}{extra}}}'

def products_json(items):
    rev = sum(it[1] for it in items)
    return f'"revenue":{rev:.2f},"currency":"EUR","products":[' + ",".join(
        f'{{{it[4]},"quantity":1}}' for it in items) + "]"

def browse(r, em, t, c, ch, ids, cx, k, screen):
    """Product pages/screens, views and adds; returns (time, items added)."""
    added = []
    for _ in range(k):
        it = r.choice(CATALOG)
        pid, frag = it[0], it[4]
        t += r.randrange(5000, 60000)
        if screen:
            em(t, "screen", f'{ids},"name":"Product","properties":{{"product_id":"{pid}"}}{cx}', c, ch)
        else:
            em(t, "page", f'{ids},"name":"Product","properties":{{"path":"/p/{pid}","title":"{it[2]}"}}{cx}', c, ch)
        em(t + r.randrange(50, 900), "track", f'{ids},"event":"Product Viewed","properties":{{{frag}}}{cx}', c, ch)
        if r.random() < 0.3:
            t += r.randrange(5000, 40000)
            em(t, "track", f'{ids},"event":"Product Added","properties":{{{frag},"quantity":1}}{cx}', c, ch)
            added.append(it)
    return t, added

def login(r, em, t, p, ids, cx, ch, sub, a):
    """identify (+ Signed Up / alias on sign-up, + group for business customers)."""
    c, uid = p.c, f"u{p.c}"
    if sub == SIGNUP:
        if r.random() < 0.5:
            em(t, "alias", f',"previousId":"{a}","userId":"{uid}"{cx}', c, ch)
        traits = (f'"email":"{p.email}","first_name":{jstr(p.first)},"last_name":{jstr(p.last)},'
                  f'"country":"{p.cc}","city":"{p.city}"')
        em(t + 300, "identify", f'{ids},"traits":{{{traits}}}{cx}', c, ch)
        em(t + 600, "track", f'{ids},"event":"Signed Up","properties":{{"method":"email"}}{cx}', c, ch)
    else:
        em(t, "identify", f'{ids},"traits":{{"email":"{p.email}"}}{cx}', c, ch)
    if p.biz:
        g = c // 40
        name, ind = f"{LAST_DE[g % len(LAST_DE)]} {INDUSTRIES[g % 5]} GmbH", INDUSTRIES[g % 5]
        em(t + 900, "group", f'{ids},"groupId":"G-{g}","traits":{{"name":"{name}","industry":"{ind}",'
                             f'"employees":{5 + g % 50}}}{cx}', c, ch)

def order(r, em, t, c, ids, cx, ch, items, d, store=""):
    oid = f"{'S' if store else 'O'}-{d + 1:03d}-{c}-{t % 100000}"
    em(t, "track", f'{ids},"event":"Order Completed","properties":{{"order_id":"{oid}",{store}'
                   f'{products_json(items)}}}{cx}', c, ch)

def b_web(r, em, d, p, t, sub, b, j):
    c, a = p.c, uuid("web", p.c, b)
    cx = ctx(WEB, f',"locale":"{p.loc}"')
    anon, known = f',"anonymousId":"{a}"', f',"anonymousId":"{a}","userId":"u{c}"'
    ids = known if sub == KNOWN else anon
    land = r.choice(["Home", "Home", "Category"])
    path = "/" if land == "Home" else "/c/" + r.choice(CATALOG)[3]
    em(t, "page", f'{ids},"name":"{land}","properties":{{"path":"{path}"}}{cx}', c, WEB)
    t, added = browse(r, em, t, c, WEB, ids, cx, r.choice([1, 1, 2, 2, 3]), False)
    if sub in (LOGIN, SIGNUP):
        t += r.randrange(5000, 60000)
        login(r, em, t, p, known, cx, WEB, sub, a)
        ids = known
        t, more = browse(r, em, t + 1000, c, WEB, ids, cx, r.choice([0, 1, 1]), False)
        added += more
    if ids is known and added and r.random() < 0.45:
        order(r, em, t + r.randrange(60000, 300000), c, ids, cx, WEB, added, d)

def b_app(r, em, d, p, t, sub, b, j):
    c = p.c
    if b:   # the family tablet: device shared by the pair, anonymousId per user (reset on logout)
        ios = mix(OPT.seed, p.fam, 5) % 2 == 0
        dev, ad = uuid("tablet", p.fam, upper=ios), uuid("tablet-ad", p.fam, upper=ios)
        model = "iPad13,18" if ios else "SM-X200"
    else:
        ios = p.app == 1
        dev, ad = uuid("dev", c, upper=ios), uuid("ad", c, upper=ios)
        model = "iPhone15,2" if ios else "Pixel 8"
        if (mix(OPT.seed, c, 6) % 100) >= (30 if ios else 85):
            ad = None   # ATT denied / ad id reset: no advertisingId
    ch = IOS if ios else ANDROID
    a = uuid("app", c, b)
    adv = f',"advertisingId":"{ad}","adTrackingEnabled":true' if ad else ',"adTrackingEnabled":false'
    maker, typ, os_ = ("Apple", "ios", "iOS") if ios else ("Google", "android", "Android")
    cx = ctx(ch, f',"device":{{"id":"{dev}"{adv},"manufacturer":"{maker}","model":"{model}","type":"{typ}"}},'
                 f'"os":{{"name":"{os_}"}},"locale":"{p.loc}"')
    anon, known = f',"anonymousId":"{a}"', f',"anonymousId":"{a}","userId":"u{c}"'
    ids = known if sub == KNOWN else anon
    em(t, "track", f'{ids},"event":"Application Opened","properties":{{"from_background":false,'
                   f'"version":"{VERSIONS[ch]}"}}{cx}', c, ch)
    em(t + r.randrange(500, 3000), "screen", f'{ids},"name":"Home","properties":{{}}{cx}', c, ch)
    if sub in (LOGIN, SIGNUP):
        t += r.randrange(5000, 30000)
        login(r, em, t, p, known, cx, ch, sub, a)
        ids = known
    t, added = browse(r, em, t + 2000, c, ch, ids, cx, r.choice([1, 1, 2, 3]), True)
    if ids is known and added and r.random() < 0.4:
        order(r, em, t + r.randrange(30000, 200000), c, ids, cx, ch, added, d)

CAMPAIGNS = ["Herbstkollektion", "Sale bis -50%", "Neu: Wohnen", "Black Week", "Gutschein für dich",
             "Winterjacken", "Adventskalender", "Last-Minute-Geschenke", "Neues Jahr, neuer Stil"]

def b_nl(r, em, d, p, t, sub, b, j):
    c, e = p.c, (p.email if r.random() < 0.85 else p.email.capitalize())
    cx = ctx(NEWSLETTER, f',"traits":{{"email":"{e}"}}')
    if sub == 0:
        em(t, "identify", f',"traits":{{"email":"{e}","first_name":{jstr(p.first)}}}{ctx(NEWSLETTER)}', c, NEWSLETTER)
        src = r.choice(["footer", "checkout", "popup"])
        em(t + 400, "track", f',"event":"Newsletter Subscribed","properties":{{"list":"weekly","source":"{src}"}}{cx}',
           c, NEWSLETTER)
        return
    camp = f'"campaign_id":"NL-{OPT.start.year}-{j + 1:02d}","subject":"{CAMPAIGNS[j % len(CAMPAIGNS)]}"'
    em(t, "track", f',"event":"Email Opened","properties":{{{camp}}}{cx}', c, NEWSLETTER)
    if b:
        pid = r.choice(CATALOG)[0]
        em(t + r.randrange(3000, 60000), "track",
           f',"event":"Email Clicked","properties":{{{camp},"link_url":"https://shop.example.de/p/{pid}"}}{cx}', c, NEWSLETTER)

def b_pos(r, em, d, p, t, sub, b, j):
    c, lid = p.c, p.loyalty
    cx = ctx(POS, f',"traits":{{"loyalty_id":"{lid}"}}')
    store = f"S-{p.cc}-{p.area}"   # the store in the customer's city
    if sub & 1:   # loyalty sign-up at the till
        ph = f',"phone":"{fmt_phone(r, p.phone)}"' if sub & 2 else ""
        em(t - r.randrange(60000, 300000), "identify",
           f',"traits":{{"loyalty_id":"{lid}","email":"{p.email}","first_name":{jstr(p.first)},'
           f'"last_name":{jstr(p.last)}{ph}}}{cx}', c, POS)
    items = [r.choice(CATALOG) for _ in range(r.choice([1, 1, 2, 3, 4]))]
    pay = r.choice(["card", "cash", "card", "mobile"])
    order(r, em, t, c, "", cx, POS, items, d,
          f'"store_id":"{store}","store_city":"{p.city}","loyalty_id":"{lid}","payment_method":"{pay}",')

def b_crm(r, em, d, p, t, sub, b, j):
    kid, first, last, email, _, phone, _, since, tier = crm_record(p, b)
    if sub & 1:
        tier = r.choice(TIERS)
    traits = f'"crm_id":"{kid}","first_name":{jstr(first)},"last_name":{jstr(last)}'
    traits += (f',"email":{jstr(email)}' if email else "") + (f',"phone":{jstr(phone)}' if phone else "")
    traits += f',"country":"{p.cc}","city":"{p.city}","customer_since":"{since}"'
    if sub & 2:
        traits += f',"loyalty_id":"{p.loyalty}","loyalty_tier":"{tier}"'
    uid = f',"userId":"u{p.c}"' if p.acc and not b else ""
    em(t, "identify", f'{uid},"traits":{{{traits}}}{ctx(CRM)}', p.c, CRM)

def b_sup(r, em, d, p, t, sub, b, j):
    c = p.c
    rs = Rng(mix(OPT.seed, c, j, 8))   # same ticket data for opening and closing
    tid, prio, subj = f"T-{c}-{j + 1}", rs.choice(PRIORITIES), rs.choice(SUBJECTS)
    e = p.email if rs.random() < 0.8 else p.email.upper()
    ph = f',"phone":"{fmt_phone(rs, p.phone)}"' if sub & 1 else ""
    cx = ctx(SUPPORT, f',"traits":{{"email":"{e}"{ph}}}')
    if sub & 2:
        res = r.choice(["solved", "solved", "refunded", "no_reply"])
        em(t, "track", f',"event":"Ticket Closed","properties":{{"ticket_id":"{tid}","priority":"{prio}",'
                       f'"resolution":"{res}"}}{cx}', c, SUPPORT)
    else:
        em(t, "track", f',"event":"Ticket Opened","properties":{{"ticket_id":"{tid}","priority":"{prio}",'
                       f'"subject":"{subj}"}}{cx}', c, SUPPORT)

BUILDERS = [b_web, b_app, b_nl, b_pos, b_crm, b_sup]
# person level a session needs: names, e-mail and phone only for identify, CRM, support, newsletter
LEVEL = [[int(s in (LOGIN, SIGNUP)) for s in range(8)]] * 2 + [[1] * 8, [s & 1 for s in range(8)], [1] * 8, [1] * 8]

def junkify(r, rest):
    """Put a junk identifier next to the real anonymousId of a web/app message (line)."""
    x = r.random()
    if x < 0.15 and '"device":{"id":"' in rest:
        key = "advertisingId" if '"advertisingId":"' in rest else "id"
        i = rest.index(f'"{key}":"') + len(key) + 4
        return rest[:i] + ZERO_UUID + rest[i + 36:], ZERO_UUID
    if x < 0.4 and '"context":{"traits"' not in rest:
        e = r.choice(JUNK_EMAILS)
        return rest.replace('"context":{', f'"context":{{"traits":{{"email":"{e}"}},', 1), e
    u = r.choice(JUNK_USER_IDS)
    if ',"userId":"' in rest:
        i = rest.index(',"userId":"') + 11
        return rest[:i] + u + rest[rest.index('"', i):], u
    return rest.replace(',"anonymousId":"', f',"userId":"{u}","anonymousId":"', 1), u

def malformed(r, d, k, line):
    """A broken variant of line that ingestion must reject on its own (still valid JSON)."""
    kind = r.choice(["missing_type", "unknown_type", "bad_timestamp", "no_identifier", "traits_not_object"])
    mid = f"m-{OPT.seed}-{d}-x{k}"
    typ = line[9:line.index('"', 9)]
    i = line.index(',"timestamp":"') + 14
    ts, rest = line[i:i + 24], line[i + 25:-2]
    if kind == "missing_type":
        line = f'{{"messageId":"{mid}","timestamp":"{ts}"{rest}}}'
    elif kind == "unknown_type":
        line = f'{{"type":"purchase","messageId":"{mid}","timestamp":"{ts}"{rest}}}'
    elif kind == "bad_timestamp":
        bad = r.choice(["not-a-date", "2026-13-45T25:61:00Z", "31.09.2026 12:00", "", "yesterday"])
        line = f'{{"type":"{typ}","messageId":"{mid}","timestamp":"{bad}"{rest}}}'
    elif kind == "no_identifier":
        frag = r.choice(CATALOG)[4]
        line = (f'{{"type":"track","messageId":"{mid}","timestamp":"{ts}","event":"Product Viewed",'
                f'"properties":{{{frag}}}{ctx(WEB)}}}')
    else:
        bad = r.choice(['"{\\"email\\":\\"x@example.com\\"}"', "[]", "42", "null", '"email=x@example.com"'])
        ids = re.search(r',"(userId|anonymousId)":"[^"]*"', rest)
        line = (f'{{"type":"identify","messageId":"{mid}","timestamp":"{ts}"{ids[0] if ids else ""},'
                f'"traits":{bad}{ctx(WEB)}}}')
    return line + "\n", kind

def emit_day(r, d, out, st):
    """The day's lines in arrival order, with junk identifiers, malformed lines and re-sends,
    as UTF-8 chunks (compact, and out is consumed on the way: a day of 1M customers is ~120 MB)."""
    chunks, lines, recent, junk_due, k = [], [], deque(maxlen=300), False, 0
    out.reverse()
    while out:
        k += 1
        line = out.pop()[1]
        x = r.random()   # < .005: junk (here or on the next web/app message), then malformed, re-send
        if x < 0.005 or junk_due:
            junk_due = ',"anonymousId":"' not in line
            if not junk_due:
                line, val = junkify(r, line)
                st["junk:" + (val if val else '""')] += 1
        lines.append(line)
        if 0.005 <= x < 0.008:
            bad, kind = malformed(r, d, k, line)
            lines.append(bad)
            st["malformed:" + kind] += 1
        elif 0.008 <= x < 0.018 and recent:
            lines.append(r.choice(recent))
            st["resent"] += 1
        recent.append(line)
        if len(lines) >= 256 or not out:
            chunks.append("".join(lines).encode())
            lines.clear()
    return chunks, st

def write_day(arg):
    """Render day d and write it once all earlier days are written (TURN holds the next day)."""
    d, sessions = arg
    chunks, st = render_day(d, sessions)
    turn, cond = TURN[0]
    with cond:
        cond.wait_for(lambda: turn.value == d)
    try:
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    finally:
        with cond:
            turn.value = d + 1
            cond.notify_all()
    return st
TURN = []   # (shared next-day counter, condition), inherited by the forked workers

# ---------------------------------------------------------------- main
def setup(opt):
    global OPT
    OPT = opt

def keep_freed_memory():
    """glibc hands freed memory back to the OS eagerly, and every day of messages then page-faults
    it back in: that was a third of the run time.  Keep it (Linux/glibc only; harmless elsewhere)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-1, 1 << 30)     # M_TRIM_THRESHOLD: give back only above 1 GB free
        libc.mallopt(-2, 256 << 20)   # M_TOP_PAD: grow and keep the heap in 256 MB steps
    except (OSError, AttributeError):
        pass

def main():
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=date.fromisoformat, default=date(2026, 9, 1))
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--format", choices=["ndjson", "crm-csv"], default="ndjson")
    ap.add_argument("--stats", action="store_true")
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    opt = ap.parse_args()
    if not 1 <= opt.customers < 2 ** 26 or not 2 <= opt.days <= 366 or opt.seed < 0:
        ap.error("need 1 <= --customers < 2^26, 2 <= --days <= 366, --seed >= 0")
    opt.weekday = [(opt.start + timedelta(days=d)).weekday() for d in range(opt.days)]
    opt.dayprefix = [(opt.start + timedelta(days=d)).isoformat() + "T" for d in range(opt.days + 2)]
    setup(opt)
    out = sys.stdout
    if opt.format == "crm-csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["crm_id", "first_name", "last_name", "email", "phone", "country"])
        n = 0
        for c in range(1, opt.customers + 1):
            p = person(c)
            for dup in range(1 + p.dup if p.crm else 0):
                kid, first, last, email, _, phone, _, _, _ = crm_record(p, dup)
                w.writerow([kid, first, last, email, phone, p.cc])
                n += 1
        if opt.stats:
            print(json.dumps({"crm_rows": n}), file=sys.stderr)
        return
    chunks = [(lo, min(lo + CHUNK, opt.customers + 1)) for lo in range(1, opt.customers + 1, CHUNK)]
    mp = get_context("fork")
    TURN.append((mp.Value("i", 0), mp.Condition()))
    pool = mp.Pool(opt.jobs) if opt.jobs > 1 else None
    buckets, st = [array.array("q") for _ in range(opt.days)], Counter()
    for bk, s in (pool.imap(prepass, chunks) if pool else map(prepass, chunks)):
        for d in range(opt.days):
            buckets[d].extend(bk[d])
        st.update(s)
    try:   # workers render days in parallel and write them to stdout themselves, in day order
        for s in (pool.imap(write_day, enumerate(buckets)) if pool else map(write_day, enumerate(buckets))):
            st.update(s)
    except BrokenPipeError:   # e.g. | head
        if pool:
            pool.terminate()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    if pool:
        pool.close()
    if opt.stats:
        print(json.dumps(summary(st), indent=1, ensure_ascii=False), file=sys.stderr)

def summary(st):
    group = lambda pre: {k[len(pre):]: v for k, v in sorted(st.items()) if k.startswith(pre)}
    msgs, by_type, by_channel = group("msg:"), Counter(), Counter()
    for k, v in msgs.items():
        by_type[k.split("/")[0]] += v
        by_channel[k.split("/")[1]] += v
    bad, junk = group("malformed:"), group("junk:")
    return {
        "persons": st["persons"],
        "persons_with_usable_identifier": st["persons_with_usable_identifier"],
        "expected_profiles": st["expected_profiles"],
        "persons_with_unlinkable_facets": st["persons_with_unlinkable_facets"],
        "persons_by_trait": group("trait:"),
        "shared_devices": st["shared_devices"],
        "lines": sum(msgs.values()) + st["resent"] + sum(bad.values()),
        "messages": sum(msgs.values()),
        "messages_by_type": dict(sorted(by_type.items())),
        "messages_by_channel": dict(sorted(by_channel.items())),
        "messages_by_type_and_channel": msgs,
        "resent": st["resent"],
        "malformed_total": sum(bad.values()), "malformed": bad,
        "junk_total": sum(junk.values()), "junk_identifier_values": junk,
    }

if __name__ == "__main__":
    main()
