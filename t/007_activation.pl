# The dispatcher against local receivers (t/CdpReceiver.pm): signed
# deliveries, retries (500, 429 with Retry-After, receiver down), dead
# letters, 410, consent withdrawn before dispatch, per-profile order, the
# private-address check at connect time, wakeups on commit, its restart
# after termination, and a kill -9 of the postmaster in the middle of a
# delivery after which every message still arrives.  The pull API's
# visibility timeout too.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use CdpReceiver;
use Digest::SHA qw(hmac_sha256_base64);
use JSON::PP;
use MIME::Base64;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $node = PostgreSQL::Test::Cluster->new('activation');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'cdp'
cdp.allow_private_destinations = on
cdp.dispatch_naptime = '1s'
});
$node->start;
my $base = $node->basedir;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub wait_for
{
	my ($query, $what) = @_;
	ok($node->poll_query_until('postgres', $query), $what);
}

sql(q{
CREATE EXTENSION cdp;
SELECT cdp.identify(ARRAY['user_id:u' || i, 'email:u' || i || '@example.com']::cdp.identifier[],
                    jsonb_build_object('first_name', 'U' || i, 'city', 'Berlin'))
  FROM generate_series(1, 40) i;
SELECT cdp.record_consent(('user_id:u' || i)::cdp.identifier, 'email_marketing', true) FROM generate_series(1, 40) i;
-- Audiences whose membership the test sets by hand: their expression keeps
-- whoever is a member, so the audience pass (which runs here) changes nothing.
INSERT INTO cdp.audience_data (audience_id, name, rule, expression, needs_full)
SELECT i, 'a' || i, 'set by the test',
       format('EXISTS (SELECT FROM cdp.audience_member_data m_ WHERE m_.profile_id = t.profile_id AND m_.audience_id = %s)', i), false
  FROM generate_series(1, 10) i;
-- What the audience pass does: change memberships, then the activation
-- stage in the same transaction.
CREATE FUNCTION change(profiles bigint[], audience text, what text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  aid integer := (SELECT audience_id FROM cdp.audience_data WHERE name = audience);
  ids bigint[];
BEGIN
  WITH c AS (INSERT INTO cdp.audience_change_data (profile_id, audience_id, change, changed_at)
             SELECT p, aid, what, clock_timestamp() FROM unnest(profiles) WITH ORDINALITY u(p, n) ORDER BY n
             RETURNING change_id)
  SELECT array_agg(change_id) INTO ids FROM c;
  IF what = 'entered' THEN
    INSERT INTO cdp.audience_member_data SELECT p, aid, now() FROM unnest(profiles) p ON CONFLICT DO NOTHING;
  ELSE
    DELETE FROM cdp.audience_member_data WHERE audience_id = aid AND profile_id = ANY (profiles);
  END IF;
  RETURN cdp._activation_stage(ids, '{}', '{}');
END $$;
});

sub undone
{
	my ($dest) = @_;
	return qq{SELECT count(*) = 0 FROM cdp.outbox WHERE destination = '$dest' AND status IN ('pending', 'in_flight')};
}

# 1. Delivery, signed: the members of a1 at activation, in one batch.
my $r1 = CdpReceiver->new("$base/r1");
my $secret_b64 = 'MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
sql(qq{SELECT cdp.create_destination('hook', '@{[$r1->url('/hook')]}', 'whsec_$secret_b64', NULL,
       '{"traits": ["city"], "headers": {"X-Api-Key": "k-123"}}')});
sql(q{INSERT INTO cdp.audience_member_data SELECT p, 1, now() FROM generate_series(1, 3) p});
is(sql(q{SELECT cdp.activate('a1', 'hook')}), '3', 'activation queues the three members');
wait_for(undone('hook'), 'the dispatcher delivers them');
my $reqs = $r1->requests;
is(scalar @$reqs, 1, 'in one request');
my $q = $reqs->[0];
is($q->{method} . ' ' . $q->{path}, 'POST /hook', 'a POST to the destination URL');
is($q->{headers}{'content-type'}, 'application/json', 'of JSON');
is($q->{headers}{'x-api-key'}, 'k-123', 'with the configured header');
like($q->{headers}{'webhook-id'}, qr/^msg_[0-9a-f]{32}$/, 'webhook-id');
ok(abs($q->{headers}{'webhook-timestamp'} - time()) < 60, 'webhook-timestamp is now, in seconds');
my $expected = hmac_sha256_base64("$q->{headers}{'webhook-id'}.$q->{headers}{'webhook-timestamp'}.$q->{body}",
	decode_base64($secret_b64));
$expected .= '=' while length($expected) % 4;
is($q->{headers}{'webhook-signature'}, "v1,$expected", 'the signature verifies (Standard Webhooks, whsec_ key)');
my $body = decode_json($q->{body});
is(scalar @{ $body->{messages} }, 3, 'three messages');
my $m = $body->{messages}[0];
is_deeply([ sort keys %$m ], [qw(audience id identifiers occurred_at profile_id traits type)], 'each with the documented fields');
is_deeply([ $m->{type}, $m->{audience}, $m->{profile_id}, $m->{identifiers}, $m->{traits} ],
	[ 'audience.entered', 'a1', 1, [ 'email:u1@example.com', 'user_id:u1' ], { city => 'Berlin' } ],
	'the first: u1 entered a1, traits filtered');
is(sql(q{SELECT string_agg(status || '/' || attempts || '/' || last_status, ',') FROM cdp.outbox WHERE destination = 'hook'}),
	'delivered/1/200,delivered/1/200,delivered/1/200', 'the outbox says delivered');

# 2. 500, then 200: the same batch again with the same webhook-id.
$r1->script('500');
sql(q{SELECT change('{4}', 'a1', 'entered')});
wait_for(undone('hook'), 'delivered after a 500');
$reqs = $r1->requests;
is(scalar @$reqs, 3, 'two more requests');
is($reqs->[1]{status} . ' ' . $reqs->[2]{status}, '500 200', 'a 500 then a 200');
is($reqs->[1]{headers}{'webhook-id'}, $reqs->[2]{headers}{'webhook-id'}, 'the retry keeps the webhook-id');
is(sql(q{SELECT attempts || ' ' || status FROM cdp.outbox WHERE destination = 'hook' AND profile_id = 4}),
	'2 delivered', 'two attempts');
wait_for(
	q{SELECT d->>'name' = 'cdp dispatcher' AND d->>'database' = 'postgres'
	     AND (d->>'pid')::int = (SELECT pid FROM pg_stat_activity WHERE backend_type = 'cdp dispatcher')
	     AND (d->>'requests', d->>'delivered', d->>'failed_requests', d->>'in_flight') = ('3', '4', '1', '0')
	     AND d->'last_error' = 'null' AND (d->>'last_round_at')::timestamptz >= (d->>'started_at')::timestamptz
	    FROM (SELECT cdp.status()->'dispatcher') s(d)},
	'cdp.status() describes the dispatcher: three requests, four messages delivered, one request failed');

# 3. 429 with Retry-After: 2 is honoured.
$r1->script('429 Retry-After: 2');
sql(q{SELECT change('{5}', 'a1', 'entered')});
wait_for(undone('hook'), 'delivered after a 429');
$reqs = $r1->requests;
is($reqs->[3]{status} . ' ' . $reqs->[4]{status}, '429 200', 'a 429 then a 200');
cmp_ok($reqs->[4]{at} - $reqs->[3]{at}, '>=', 1.9, 'not before Retry-After');

# 4. The receiver is down, then back.
$r1->stop;
sql(q{SELECT change('{6}', 'a1', 'entered')});
wait_for(q{SELECT attempts >= 2 AND last_error LIKE '%onnect%' FROM cdp.outbox WHERE destination = 'hook' AND profile_id = 6},
	'connection errors are retried and recorded');
$r1->start;
wait_for(undone('hook'), 'delivered once the receiver is back');

# 5. Dead letters: 503 until max_attempts; a 400 at once, its response kept;
# 410 pauses the destination.
my $r2 = CdpReceiver->new("$base/r2");
$r2->script(('503') x 3, '400', '410');
sql(qq{SELECT cdp.create_destination('flaky', '@{[$r2->url]}', NULL, NULL, '{"max_attempts": 3}')});
sql(q{SELECT cdp.activate('a2', 'flaky'); SELECT change('{1}', 'a2', 'entered')});
wait_for(q{SELECT status = 'dead' FROM cdp.outbox WHERE destination = 'flaky' AND profile_id = 1},
	'dead after three 503s');
like(sql(q{SELECT attempts || ' ' || last_status || ' ' || last_error FROM cdp.outbox WHERE destination = 'flaky'}),
	qr/^3 503 gave up after 3 attempts: HTTP 503: \{"error":"scripted 503"\}$/, 'the last answer is kept');
sql(q{SELECT change('{2}', 'a2', 'entered')});
wait_for(q{SELECT status = 'dead' FROM cdp.outbox WHERE destination = 'flaky' AND profile_id = 2}, 'a 400 is final');
is(sql(q{SELECT attempts || ' ' || last_status FROM cdp.outbox WHERE destination = 'flaky' AND profile_id = 2}),
	'1 400', 'after one attempt');
sql(q{SELECT change('{3}', 'a2', 'entered')});
wait_for(q{SELECT paused FROM cdp.destinations WHERE name = 'flaky'}, '410 Gone pauses the destination');
sql(q{SELECT change('{4}', 'a2', 'entered')});
sleep 1.5;
is(sql(q{SELECT status FROM cdp.outbox WHERE destination = 'flaky' AND profile_id = 4}), 'pending',
	'a paused destination keeps its messages');
is(sql(q{SELECT cdp.retry_dead('flaky')}), '3', 'retry_dead queues the dead ones again');
sql(q{SELECT cdp.resume_destination('flaky')});
wait_for(undone('flaky'), 'resumed, everything is delivered');

# 6. Consent withdrawn before dispatch: never sent.
my $r3 = CdpReceiver->new("$base/r3");
sql(qq{SELECT cdp.create_destination('mail', '@{[$r3->url]}', NULL, 'email_marketing')});
sql(q{SELECT cdp.pause_destination('mail'); SELECT cdp.activate('a3', 'mail'); SELECT change('{7,8,9}', 'a3', 'entered')});
sql(q{SELECT cdp.record_consent('email:u8@example.com', 'email_marketing', false)});
sql(q{SELECT cdp.resume_destination('mail')});
wait_for(undone('mail'), 'the others are delivered');
is(sql(q{SELECT string_agg(profile_id || ' ' || status, ',' ORDER BY profile_id) FROM cdp.outbox WHERE destination = 'mail'}),
	'7 delivered,8 cancelled,9 delivered', 'the withdrawn one is cancelled');
is(join(',', sort map { $_->{profile_id} } @{ $r3->delivered_messages }), '7,9', 'and never sent');

# 7. Per profile, messages arrive in order: batches of 1, 4 at a time, some
# failing and retried.
my $r4 = CdpReceiver->new("$base/r4");
$r4->script('500', '200', '500', '200', '503');
sql(qq{SELECT cdp.create_destination('ordered', '@{[$r4->url]}', NULL, NULL, '{"batch_size": 1, "max_in_flight": 4}')});
sql(q{SELECT cdp.activate('a4', 'ordered')});
for my $i (1 .. 3)
{
	sql(q{SELECT change('{10,11,12,13,14}', 'a4', 'entered')});
	sql(q{SELECT change('{10,11,12,13,14}', 'a4', 'exited')});
}
wait_for(undone('ordered'), 'thirty messages delivered');
my %seen;
my $in_order = 1;
for my $msg (@{ $r4->delivered_messages })
{
	my $p = $msg->{profile_id};
	$in_order = 0 if defined $seen{$p} && $msg->{id} <= $seen{$p};
	$seen{$p} = $msg->{id};
}
ok($in_order, 'each profile\'s messages arrived in id order');
is(scalar @{ $r4->delivered_messages }, 30, 'each once');

# 8. A destination whose host now resolves to a private address (as if DNS
# changed after it was accepted) is refused at connect time, nothing sent.
my $r5 = CdpReceiver->new("$base/r5");
sql(qq{SELECT cdp.create_destination('rebound', '@{[$r5->url]}')});
sql(q{UPDATE cdp.destination_data SET private_allowed = false WHERE name = 'rebound'});
sql(q{SELECT cdp.activate('a5', 'rebound'); SELECT change('{1}', 'a5', 'entered')});
wait_for(q{SELECT status = 'dead' FROM cdp.outbox WHERE destination = 'rebound'}, 'refused');
like(sql(q{SELECT last_error FROM cdp.outbox WHERE destination = 'rebound'}),
	qr/^refused: the host resolves to 127\.0\.0\.1, a loopback or private address$/, 'and says why');
is(scalar @{ $r5->requests }, 0, 'the receiver got nothing');

# 9. A commit wakes the dispatcher: with a naptime of 10 minutes a message
# still goes at once.
sql(q{ALTER SYSTEM SET cdp.dispatch_naptime = '10min'; SELECT pg_reload_conf()});
sleep 1;
{
	my $t0 = time();
	sql(q{SELECT change('{20}', 'a1', 'entered')});
	wait_for(undone('hook'), 'a commit wakes the dispatcher');
	cmp_ok(time() - $t0, '<', 30, 'long before its naptime');
}

# 10. Terminated, the dispatcher is started again and goes on.
my $pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'cdp dispatcher'});
like($pid, qr/^\d+$/, 'the dispatcher runs');
sql(qq{SELECT pg_terminate_backend($pid)});
wait_for(qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'cdp dispatcher' AND pid <> $pid},
	'it is restarted');
sql(q{SELECT change('{21}', 'a1', 'entered')});
wait_for(undone('hook'), 'and delivers');

# 11. kill -9 of the postmaster while requests are in flight: after the
# restart every message is delivered (at least once).
my $r6 = CdpReceiver->new("$base/r6");
$r6->script(('200 delay=1500') x 4);
sql(qq{SELECT cdp.create_destination('crashy', '@{[$r6->url]}', NULL, NULL, '{"batch_size": 5, "max_in_flight": 2}')});
sql(q{SELECT cdp.activate('a6', 'crashy'); SELECT change(ARRAY(SELECT generate_series(1, 30)::bigint), 'a6', 'entered')});
wait_for(q{SELECT count(*) > 0 FROM cdp.outbox WHERE destination = 'crashy' AND status = 'in_flight'},
	'requests are in flight');
$node->kill9;
my $started = 0;
for (1 .. 30)
{
	# Until the killed server's processes have all gone, a start fails
	# (its shared memory is still attached) and reads the stale pid file.
	sleep 1;
	last if ($started = $node->start(fail_ok => 1));
	$node->{_pid} = undef;
}
ok($started, 'the server starts again after kill -9');
wait_for(undone('crashy'), 'everything is delivered after the restart');
my %got = map { $_->{id} => 1 } @{ $r6->delivered_messages };
is( sql(q{SELECT string_agg(message_id::text, ',' ORDER BY message_id) FROM cdp.outbox WHERE destination = 'crashy'}),
	join(',', sort { $a <=> $b } keys %got), 'the receiver got every message');

# 12. Pull: leased messages come back after the visibility timeout.
sql(q{SELECT cdp.create_destination('feed', NULL, options => '{"kind": "pull"}');
      SELECT cdp.activate('a7', 'feed'); SELECT change('{1,2,3}', 'a7', 'entered')});
# Both reads in one session (two transactions): on a busy machine starting
# a second psql alone can take longer than the lease.  The lease is long
# enough for a loaded 2-core machine (1 s was not: the second read came
# after it had run out).
my @leased = split /\n/, sql(q{SELECT count(*) FROM cdp.read('feed', 10, '5 seconds');
                                SELECT count(*) FROM cdp.read('feed', 10, '5 seconds')});
is($leased[0], '3', 'three leased');
is($leased[1], '0', 'none while leased');
sleep 5.5;
is(sql(q{SELECT string_agg(attempts::text, ',') FROM cdp.read('feed', 10, '1 minute')}), '2,2,2',
	'back after the visibility timeout');
is(sql(q{SELECT cdp.ack(ARRAY(SELECT message_id FROM cdp.outbox WHERE destination = 'feed'))}), '3', 'acknowledged');
is(sql(q{SELECT count(*) FROM cdp.read('feed')}), '0', 'and gone');

is(sql(q{SELECT count(*) FROM cdp.outbox WHERE status IN ('pending', 'in_flight') AND destination <> 'flaky'}), '0',
	'nothing left undone');
ok(!$node->log_contains(qr/PANIC|TRAP|server process .* was terminated by signal 11/), 'no crash in the log');

$_->stop for ($r1, $r2, $r3, $r4, $r5, $r6);
$node->stop;
done_testing();
