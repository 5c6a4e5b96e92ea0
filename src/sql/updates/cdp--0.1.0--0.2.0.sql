-- cdp 0.1.0 -> 0.2.0
--
-- Every SQL change since 0.1.0, in the order it was made.  Each change is also
-- in src/sql/ (fresh installs); t/009_upgrade.pl checks that both agree.

\echo Use "ALTER EXTENSION cdp UPDATE TO '0.2.0'" to load this file. \quit
