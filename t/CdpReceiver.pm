# A small webhook receiver on 127.0.0.1 for the activation TAP tests: a
# forked process that answers POSTs (HTTP/1.1, keep-alive), each connection
# in a process of its own, and logs every request it gets.  Connections are
# served concurrently as a real endpoint would: the dispatcher keeps several
# open, and a receiver that served one keep-alive connection at a time would
# leave the others' requests unread until the dispatcher timed them out and
# sent them again.
#
#   my $r = CdpReceiver->new($dir);     # listens on a free port
#   $r->url('/hook');                   # http://127.0.0.1:PORT/hook
#   $r->script('500', '200');           # the next answers, in order; then 200
#   $r->script('429 Retry-After: 3');   # status, then headers to add
#   $r->script('200 delay=2000');       # answer after 2 s
#   $r->requests;                       # [{headers => {...}, body => '...', status => N, at => secs}]
#   $r->stop; $r->start;                # down, then back on the same port
#
# The script and the log are files in $dir, so the test process and the
# receiver share them without a pipe.
package CdpReceiver;

use strict;
use warnings;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);
use Fcntl qw(:flock);
use POSIX ();

sub new
{
	my ($class, $dir, %opts) = @_;
	mkdir $dir;
	my $self = bless { dir => $dir, port => $opts{port} || 0, pid => undef }, $class;
	open(my $fh, '>', "$dir/requests.log") or die "$dir/requests.log: $!";
	close $fh;
	$self->script();
	$self->start;
	return $self;
}

sub port { return $_[0]->{port}; }

sub url
{
	my ($self, $path) = @_;
	return "http://127.0.0.1:$self->{port}" . ($path // '/');
}

# The next answers, one line each: "STATUS [delay=MS] [Header: value]...",
# headers separated by " | ".  When the script is empty: 200.
sub script
{
	my ($self, @lines) = @_;
	my $tmp = "$self->{dir}/script.tmp";
	open(my $fh, '>', $tmp) or die "$tmp: $!";
	print $fh map { "$_\n" } @lines;
	close $fh;
	rename $tmp, "$self->{dir}/script" or die "rename: $!";
	return;
}

sub requests
{
	my ($self) = @_;
	open(my $fh, '<', "$self->{dir}/requests.log") or die "requests.log: $!";
	my @r = map { decode_json($_) } grep { /\S/ } <$fh>;
	close $fh;
	return \@r;
}

# Every message of every request answered with a 2xx, in arrival order.
sub delivered_messages
{
	my ($self) = @_;
	my @m;
	for my $r (@{ $self->requests })
	{
		next unless $r->{status} >= 200 && $r->{status} < 300;
		push @m, @{ decode_json($r->{body})->{messages} };
	}
	return \@m;
}

sub start
{
	my ($self) = @_;
	my $sock;
	for my $try (1 .. 50)
	{
		$sock = IO::Socket::INET->new(
			LocalAddr => '127.0.0.1',
			LocalPort => $self->{port},
			Listen => 64,
			ReuseAddr => 1,
			Proto => 'tcp');
		last if $sock;
		sleep 0.1;
	}
	die "receiver: cannot listen on port $self->{port}: $!" unless $sock;
	$self->{port} = $sock->sockport;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		# A process group of its own, so that stop() ends the connection
		# processes too: a receiver that is down must not answer.
		POSIX::setpgid(0, 0);
		$SIG{TERM} = sub { POSIX::_exit(0); };
		serve($self->{dir}, $sock);
		POSIX::_exit(0);
	}
	POSIX::setpgid($pid, $pid);    # as the child does: whichever runs first
	close $sock;
	$self->{pid} = $pid;
	return;
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'KILL', -$self->{pid};
	waitpid($self->{pid}, 0);
	$self->{pid} = undef;
	return;
}

sub DESTROY { $_[0]->stop; }

# Take the first line of the script (the child only).
sub next_answer
{
	my ($dir) = @_;
	my $file = "$dir/script";
	open(my $fh, '+<', $file) or return '200';
	flock($fh, LOCK_EX);
	my @lines = <$fh>;
	my $first = shift @lines;
	seek($fh, 0, 0);
	truncate($fh, 0);
	print $fh @lines;
	close $fh;
	return '200' unless defined $first && $first =~ /\S/;
	chomp $first;
	return $first;
}

sub serve
{
	my ($dir, $listen) = @_;
	$SIG{CHLD} = 'IGNORE';
	while (1)
	{
		my $c = $listen->accept;
		next unless $c;    # interrupted by a child's exit
		my $pid = fork();
		die "fork: $!" unless defined $pid;
		if ($pid)
		{
			close $c;
			next;
		}
		close $listen;
		$c->autoflush(1);
		# This connection's requests in turn (keep-alive).
	  REQUEST:
		while (1)
		{
			my $line = <$c>;
			last REQUEST unless defined $line;
			my %h;
			while (my $l = <$c>)
			{
				$l =~ s/\r?\n$//;
				last if $l eq '';
				my ($k, $v) = split /:\s*/, $l, 2;
				$h{ lc $k } = $v;
			}
			my $body = '';
			my $len = $h{'content-length'} // 0;
			while (length($body) < $len)
			{
				my $n = read($c, $body, $len - length($body), length($body));
				last REQUEST unless $n;
			}
			my $answer = next_answer($dir);
			my ($status, @rest) = split / /, $answer, 2;
			my $extra = $rest[0] // '';
			my $delay = 0;
			$delay = $1 if $extra =~ s/^delay=(\d+)\s*//;
			my @headers = grep { /\S/ } split /\s*\|\s*/, $extra;
			sleep($delay / 1000) if $delay;
			my $rbody = $status =~ /^2/ ? '' : "{\"error\":\"scripted $status\"}";
			open(my $log, '>>', "$dir/requests.log") or die "requests.log: $!";
			flock($log, LOCK_EX);
			print $log encode_json({ method => (split / /, $line)[0], path => (split / /, $line)[1],
				headers => \%h, body => $body, status => $status + 0, at => time() }) . "\n";
			close $log;
			print $c "HTTP/1.1 $status X\r\nContent-Type: application/json\r\nContent-Length: "
			  . length($rbody) . "\r\n" . join('', map { "$_\r\n" } @headers) . "\r\n" . $rbody;
		}
		close $c;
		POSIX::_exit(0);
	}
}

1;
