# The whole chain with both background workers and nothing called by hand:
# events are ingested, the audience pass (cdp worker) changes memberships
# and writes the outbox in the same transaction, the dispatcher delivers to
# a local receiver.  A consent withdrawal takes the person out of the
# audience, cancels what was still pending for them and tells the
# destination (identifiers only, hashed as configured); an erasure tells
# every destination that received the person's data.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use CdpReceiver;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('e2e');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'cdp'
cdp.allow_private_destinations = on
});
$node->start;
my $base = $node->basedir;
sub sql { return $node->safe_psql('postgres', $_[0]); }

my $r = CdpReceiver->new("$base/receiver");
sql(qq{
CREATE EXTENSION cdp;
SELECT cdp.create_trait('orders_30d', 'count', 'Order Completed', NULL, '30 days');
SELECT cdp.create_audience('repeat_buyers', 'orders_30d >= 2', 'email_marketing');
SELECT cdp.create_destination('mail_tool', '@{[$r->url('/cdp')]}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', NULL,
                              '{"hash_identifiers": true, "identifiers": ["email"], "traits": ["first_name"]}');
SELECT cdp.activate('repeat_buyers', 'mail_tool');
SELECT cdp.identify('{user_id:ann,email:ann\@example.com}', '{"first_name": "Ann"}');
SELECT cdp.identify('{user_id:bob,email:bob\@example.com}', '{"first_name": "Bob"}');
SELECT cdp.record_consent('user_id:ann', 'email_marketing', true);
SELECT cdp.record_consent('user_id:bob', 'email_marketing', true);
});

# Two orders each, as the shop's collector would post them.
sql(q{SELECT cdp.ingest('{"batch": [
  {"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"revenue": 10}},
  {"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"revenue": 20}},
  {"type": "track", "userId": "bob", "event": "Order Completed", "properties": {"revenue": 30}},
  {"type": "track", "userId": "bob", "event": "Order Completed", "properties": {"revenue": 40}}]}')});
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 2 FROM cdp.outbox WHERE type = 'audience.entered' AND status = 'delivered'}),
	'both entries were delivered, without any call but ingestion');
my $msgs = $r->delivered_messages;
is(scalar @$msgs, 2, 'the receiver got two messages');
is_deeply([ sort map { $_->{type} . ' ' . $_->{audience} } @$msgs ],
	[ 'audience.entered repeat_buyers', 'audience.entered repeat_buyers' ], 'both entered repeat_buyers');
my $ann_hash = sql(q{SELECT cdp.hashed('email:ann@example.com')});
my ($ann) = grep { $_->{traits}{first_name} eq 'Ann' } @$msgs;
is_deeply($ann->{identifiers}, ["email:$ann_hash"], 'identifiers filtered to email and hashed');
is(sql(q{SELECT count(*) FROM cdp.outbox o JOIN cdp.audience_changes c ON c.profile_id = o.profile_id
          WHERE c.audience = 'repeat_buyers' AND c.change = 'entered'}), '2',
	'each message has the change that caused it');

# The receiver goes down; Bob withdraws before his next message is sent.
$r->stop;
sql(q{SELECT cdp.track('{user_id:ann}', 'Order Completed')});    # no change: already a member
sql(q{SELECT cdp.record_consent('user_id:bob', 'email_marketing', false, 'preference center')});
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM cdp.audience_changes WHERE change = 'exited' AND reason = 'consent'}),
	'bob left the audience (reason consent)');
ok($node->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM cdp.outbox WHERE profile_id = (SELECT cdp.profile_of('user_id:bob'))
		     AND type IN ('audience.exited', 'consent.withdrawn')}),
	'the destination is to be told');
$r->start;
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM cdp.outbox WHERE status IN ('pending', 'in_flight')}),
	'after the receiver is back, nothing is left undone');
my @bob = grep { $_->{profile_id} == sql(q{SELECT cdp.profile_of('user_id:bob')}) } @{ $r->delivered_messages };
ok((grep { $_->{type} eq 'audience.exited' || $_->{type} eq 'consent.withdrawn' } @bob),
	'the receiver heard that bob left');
ok(!(grep { ($_->{traits} // {})->{first_name} && $_->{type} ne 'audience.entered' } @bob),
	'what it heard after the withdrawal carries no traits');

# Erasure: the destination that received Ann's data is told.
sql(q{SELECT cdp.erase_subject('email:ann@example.com', 'Art. 17 request')});
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM cdp.outbox WHERE type = 'profile.erased' AND status = 'delivered'}),
	'profile.erased was delivered');
ok((grep { $_->{type} eq 'profile.erased' } @{ $r->delivered_messages }), 'the receiver got it');
is(sql(q{SELECT count(*) FROM cdp.audience_members}), '0', 'nobody is left in the audience');

$r->stop;
$node->stop;
done_testing();
