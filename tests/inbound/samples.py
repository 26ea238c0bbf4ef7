"""Inbound fixtures modelled on real notifications (addresses and hosts are fictional).

Every fixture is a ``str`` written with ``\\n`` line ends; :func:`wire` turns one into
the CRLF bytes an SMTP server hands over.
"""

from __future__ import annotations

# VerpCodec(b"fixture-secret").encode("bounces", "mc.example", 7, 42)
VERP_SECRET = b"fixture-secret"
VERP = "bounces+a4vgd6jhnxuzen4pwfua@mc.example"


def wire(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


# The message mailcore sent, as it comes back inside bounces.
ORIGINAL = f"""\
Return-Path: <{VERP}>
Received: from mc.example (mc.example [198.51.100.7])
	by mx1.example.org (Postfix) with ESMTPS id 4Q3xYz1abcz9sWR
	for <jane.doe@example.org>; Tue,  4 Jun 2024 10:12:31 +0000 (UTC)
Message-ID: <cmp_7Hq.c42@mc.example>
Date: Tue, 04 Jun 2024 10:12:30 +0000
From: "Acme News" <news@acme.example>
To: Jane Doe <jane.doe@example.org>
Subject: =?utf-8?q?Sommer-Angebote_f=C3=BCr_Sie?=
X-Mailcore-Campaign: cmp_7Hq
List-Unsubscribe: <https://mc.example/u/AbCdEf>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hello Jane, our summer offers are here.
"""

POSTFIX_USER_UNKNOWN = f"""\
Return-Path: <>
Delivered-To: {VERP}
Received: by mx.sender.example (Postfix) id 4Q3xYz1abcz9sWR; Tue,  4 Jun 2024 10:12:33 +0000 (UTC)
Date: Tue,  4 Jun 2024 10:12:33 +0000 (UTC)
From: MAILER-DAEMON@mx1.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {VERP}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="4Q3xYz1abcz9sWR.1717495953/mx1.example.org"
Content-Transfer-Encoding: 8bit
Message-Id: <20240604101233.4Q3xYz1abcz9sWR@mx1.example.org>

This is a MIME-encapsulated message.

--4Q3xYz1abcz9sWR.1717495953/mx1.example.org
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx1.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<jane.doe@example.org>: host mx1.example.org[203.0.113.25] said: 550 5.1.1
    <jane.doe@example.org>: Recipient address rejected: User unknown in virtual
    mailbox table (in reply to RCPT TO command)

--4Q3xYz1abcz9sWR.1717495953/mx1.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx1.example.org
X-Postfix-Queue-ID: 4Q3xYz1abcz9sWR
X-Postfix-Sender: rfc822; {VERP}
Arrival-Date: Tue,  4 Jun 2024 10:12:31 +0000 (UTC)

Final-Recipient: rfc822; jane.doe@example.org
Original-Recipient: rfc822;jane.doe@example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx1.example.org
Diagnostic-Code: smtp; 550 5.1.1 <jane.doe@example.org>: Recipient address
    rejected: User unknown in virtual mailbox table

--4Q3xYz1abcz9sWR.1717495953/mx1.example.org
Content-Description: Undelivered Message
Content-Type: message/rfc822
Content-Transfer-Encoding: 8bit

{ORIGINAL}
--4Q3xYz1abcz9sWR.1717495953/mx1.example.org--
"""

EXIM_DSN = f"""\
Return-path: <>
Envelope-to: {VERP}
Received: from Debian-exim by mail.example.net with local (Exim 4.96)
	id 1sEa9Q-0003xz-2B
	for {VERP}; Tue, 04 Jun 2024 11:02:12 +0000
X-Failed-Recipients: bob@example.net
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mail.example.net>
To: {VERP}
References: <cmp_7Hq.c43@mc.example>
Content-Type: multipart/report; report-type=delivery-status; boundary=1717498932-eximdsn-1804289383
MIME-Version: 1.0
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1sEa9Q-0003xz-2B@mail.example.net>
Date: Tue, 04 Jun 2024 11:02:12 +0000

--1717498932-eximdsn-1804289383
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  bob@example.net
    host mx.example.net [192.0.2.44]
    SMTP error from remote mail server after RCPT TO:<bob@example.net>:
    550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown

--1717498932-eximdsn-1804289383
Content-type: message/delivery-status

Reporting-MTA: dns; mail.example.net

Action: failed
Final-Recipient: rfc822;bob@example.net
Status: 5.0.0
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown

--1717498932-eximdsn-1804289383
Content-type: message/rfc822

Return-path: <{VERP}>
Message-ID: <cmp_7Hq.c43@mc.example>
From: "Acme News" <news@acme.example>
To: bob@example.net
Subject: Summer offers
X-Mailcore-Campaign: cmp_7Hq

Hello Bob.

--1717498932-eximdsn-1804289383--
"""

GMAIL_DSN = f"""\
Delivered-To: {VERP}
Return-Path: <>
Received: by 2002:a05:6a10:8a1b:b0:4f2:e4c3:1b2a with SMTP id abc123;
        Wed, 5 Jun 2024 08:14:03 -0700 (PDT)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {VERP}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
References: <cmp_9Zk.c7@mc.example>
In-Reply-To: <cmp_9Zk.c7@mc.example>
X-Failed-Recipients: nobody.here@gmail.com
Message-ID: <6660a1b2.170a0220.1c2b3.abcdGMR@mx.google.com>
Date: Wed, 05 Jun 2024 08:14:03 -0700 (PDT)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000a1b2c3061a2b3c4d"; report-type=delivery-status

--000000000000a1b2c3061a2b3c4d
Content-Type: multipart/related; boundary="000000000000a1b2c4061a2b3c4e"

--000000000000a1b2c4061a2b3c4e
Content-Type: multipart/alternative; boundary="000000000000a1b2c5061a2b3c4f"

--000000000000a1b2c5061a2b3c4f
Content-Type: text/plain; charset="UTF-8"


** Address not found **

Your message wasn't delivered to nobody.here@gmail.com because the address couldn't be
found, or is unable to receive mail.

Learn more here: https://support.google.com/mail/?p=NoSuchUser

The response was:

The email account that you tried to reach does not exist. Please try double-checking the
recipient's email address for typos or unnecessary spaces. For more information, go to
https://support.google.com/mail/?p=NoSuchUser

--000000000000a1b2c5061a2b3c4f
Content-Type: text/html; charset="UTF-8"

<html><body><h2>Address not found</h2><p>Your message wasn't delivered to <a
style='color:#212121;text-decoration:none'><b>nobody.here@gmail.com</b></a> because the
address couldn't be found.</p></body></html>

--000000000000a1b2c5061a2b3c4f--
--000000000000a1b2c4061a2b3c4e
Content-Type: image/png; name="icon.png"
Content-Disposition: attachment; filename="icon.png"
Content-Transfer-Encoding: base64
Content-ID: <icon.png>

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==
--000000000000a1b2c4061a2b3c4e--

--000000000000a1b2c3061a2b3c4d
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; mc.example (198.51.100.7)
Arrival-Date: Wed, 05 Jun 2024 08:14:02 -0700 (PDT)
X-Original-Message-ID: <cmp_9Zk.c7@mc.example>

Final-Recipient: rfc822; nobody.here@gmail.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (2607:f8b0:4023:1004::1a, the server
 for the domain gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does
 not exist. Please try 550-5.1.1 double-checking the recipient's email address for
 typos or 550-5.1.1 unnecessary spaces. 550 5.1.1
 https://support.google.com/mail/?p=NoSuchUser d2e1a72fcca58-70244aabbccsi1b3a.321 - gsmtp
Last-Attempt-Date: Wed, 05 Jun 2024 08:14:03 -0700 (PDT)

--000000000000a1b2c3061a2b3c4d
Content-Type: message/rfc822

Return-Path: <{VERP}>
Message-ID: <cmp_9Zk.c7@mc.example>
From: Acme News <news@acme.example>
To: nobody.here@gmail.com
Subject: Your June digest
X-Mailcore-Campaign: cmp_9Zk
Date: Wed, 05 Jun 2024 15:14:01 +0000
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<p>Digest</p>

--000000000000a1b2c3061a2b3c4d--
"""

O365_NDR = f"""\
Received: from DM6PR11MB1234.namprd11.prod.outlook.com (2603:10b6:5:1a0::13)
 by DM6PR11MB1234.namprd11.prod.outlook.com with mapi id 15.20.7633.021;
 Thu, 6 Jun 2024 09:00:02 +0000
MIME-Version: 1.0
From: Microsoft Outlook
	<MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.onmicrosoft.com>
To: <{VERP}>
Date: Thu, 6 Jun 2024 09:00:02 +0000
Content-Type: multipart/report; report-type=delivery-status;
	boundary="e1f3d7e8-0bd6-4d2a-9b0a-7f31f2ad8c36"
X-MS-Exchange-Message-Is-Ndr:
Content-Language: en-US
Message-ID: <a1b2c3d4-5e6f-4a1b-8c9d-0e1f2a3b4c5d@DM6PR11MB1234.namprd11.prod.outlook.com>
In-Reply-To: <cmp_Q1.c1234@mc.example>
References: <cmp_Q1.c1234@mc.example>
Subject: Undeliverable: Your June newsletter
Auto-Submitted: auto-replied

--e1f3d7e8-0bd6-4d2a-9b0a-7f31f2ad8c36
Content-Type: multipart/alternative; differences=Content-Type;
	boundary="b5c7a1d2-7e8f-4c3b-a9d0-1e2f3a4b5c6d"

--b5c7a1d2-7e8f-4c3b-a9d0-1e2f3a4b5c6d
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Your message to ghost@contoso.com couldn't be delivered.
ghost wasn't found at contoso.com.

Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient=
 not found by SMTP address lookup'

--b5c7a1d2-7e8f-4c3b-a9d0-1e2f3a4b5c6d
Content-Type: text/html; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

<html><body><b>ghost</b> wasn't found at <b>contoso.com</b>.</body></html>

--b5c7a1d2-7e8f-4c3b-a9d0-1e2f3a4b5c6d--

--e1f3d7e8-0bd6-4d2a-9b0a-7f31f2ad8c36
Content-Type: message/delivery-status

Reporting-MTA: dns;DM6PR11MB1234.namprd11.prod.outlook.com
Received-From-MTA: dns;mc.example
Arrival-Date: Thu, 6 Jun 2024 09:00:01 +0000

Original-Recipient: rfc822;ghost@contoso.com
Final-Recipient: rfc822;ghost@contoso.com
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not
 found by SMTP address lookup
X-Display-Name: ghost@contoso.com

--e1f3d7e8-0bd6-4d2a-9b0a-7f31f2ad8c36
Content-Type: message/rfc822

Received: from mc.example (198.51.100.7) by
 BN8NAM12FT047.mail.protection.outlook.com (10.13.182.123) with Microsoft SMTP
 Server id 15.20.7633.15 via Frontend Transport; Thu, 6 Jun 2024 09:00:01 +0000
Message-ID: <cmp_Q1.c1234@mc.example>
From: Acme News <news@acme.example>
To: <ghost@contoso.com>
Subject: Your June newsletter
X-Mailcore-Campaign: cmp_Q1
Date: Thu, 6 Jun 2024 09:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain

June newsletter.

--e1f3d7e8-0bd6-4d2a-9b0a-7f31f2ad8c36--
"""

POSTFIX_DELAYED = f"""\
Return-Path: <>
From: MAILER-DAEMON@relay.example.com (Mail Delivery System)
Subject: Delayed Mail (still being retried)
To: {VERP}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="A1B2C3D4E5.1717600000/relay.example.com"
Date: Wed,  5 Jun 2024 14:06:40 +0000 (UTC)

This is a MIME-encapsulated message.

--A1B2C3D4E5.1717600000/relay.example.com
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host relay.example.com.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

<slow@slow.example>: connect to mx.slow.example[192.0.2.8]:25: Connection timed
    out

--A1B2C3D4E5.1717600000/relay.example.com
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.com
X-Postfix-Queue-ID: A1B2C3D4E5
X-Postfix-Sender: rfc822; {VERP}
Arrival-Date: Wed,  5 Jun 2024 10:06:40 +0000 (UTC)

Final-Recipient: rfc822; slow@slow.example
Original-Recipient: rfc822;slow@slow.example
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.slow.example[192.0.2.8]:25: Connection
    timed out
Will-Retry-Until: Mon, 10 Jun 2024 10:06:40 +0000 (UTC)

--A1B2C3D4E5.1717600000/relay.example.com
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <{VERP}>
Message-ID: <cmp_7Hq.c99@mc.example>
From: "Acme News" <news@acme.example>
To: slow@slow.example
Subject: Summer offers
X-Mailcore-Campaign: cmp_7Hq

--A1B2C3D4E5.1717600000/relay.example.com--
"""

# Sendmail: several recipients in one report, returned headers only.
SENDMAIL_MULTI = f"""\
Return-Path: <>
From: Mail Delivery Subsystem <MAILER-DAEMON@smtp.example.net>
To: <{VERP}>
Subject: Returned mail: see transcript for details
Auto-Submitted: auto-generated (failure)
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="45BAhq7D016201.1717650000/smtp.example.net"
Date: Thu, 6 Jun 2024 05:00:00 GMT

This is a MIME-encapsulated message

--45BAhq7D016201.1717650000/smtp.example.net

The original message was received at Thu, 6 Jun 2024 04:59:58 GMT
from mc.example [198.51.100.7]

   ----- The following addresses had permanent fatal errors -----
<ann@example.net>
    (reason: 550 5.1.1 <ann@example.net>... User unknown)
<ben@example.net>
    (reason: 552 5.2.2 Mailbox full)

   ----- Transcript of session follows -----
... while talking to mx.example.net.:
>>> RCPT To:<ann@example.net>
<<< 550 5.1.1 <ann@example.net>... User unknown

--45BAhq7D016201.1717650000/smtp.example.net
Content-Type: message/delivery-status

Reporting-MTA: dns; smtp.example.net
Received-From-MTA: DNS; mc.example
Arrival-Date: Thu, 6 Jun 2024 04:59:58 GMT

Final-Recipient: RFC822; ann@example.net
Action: failed
Status: 5.1.1
Remote-MTA: DNS; mx.example.net
Diagnostic-Code: SMTP; 550 5.1.1 <ann@example.net>... User unknown
Last-Attempt-Date: Thu, 6 Jun 2024 05:00:00 GMT

Final-Recipient: RFC822; ben@example.net
Action: failed
Status: 5.2.2
Remote-MTA: DNS; mx.example.net
Diagnostic-Code: SMTP; 552 5.2.2 Mailbox full
Last-Attempt-Date: Thu, 6 Jun 2024 05:00:00 GMT

Original-Recipient: rfc822;cat@example.net
Final-Recipient: RFC822; cat@example.net
Action: failed
Status: 4.7.1
Diagnostic-Code: SMTP; 451 4.7.1 Greylisted, please try again later
Last-Attempt-Date: Thu, 6 Jun 2024 05:00:00 GMT

Final-Recipient: RFC822; dan@example.net
Action: relayed
Status: 2.0.0
Remote-MTA: DNS; legacy.example.net

--45BAhq7D016201.1717650000/smtp.example.net
Content-Type: text/rfc822-headers

Return-Path: <{VERP}>
Received: from mc.example (mc.example [198.51.100.7])
	by smtp.example.net (8.17.1/8.17.1) with ESMTPS id 45BAhq7D016201;
	Thu, 6 Jun 2024 04:59:58 GMT
Message-ID: <cmp_M2.list@mc.example>
From: Acme News <news@acme.example>
To: undisclosed-recipients:;
Subject: =?iso-8859-1?q?Neuigkeiten_f=FCr_Sie?=
X-Mailcore-Campaign: cmp_M2

--45BAhq7D016201.1717650000/smtp.example.net--
"""

# RFC 6533: an SMTPUTF8 recipient, base64-encoded global delivery status.
GLOBAL_DSN = """\
From: MAILER-DAEMON@mx.example.jp
To: bounces@mc.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="g"

--g
Content-Type: text/plain; charset=utf-8

Delivery failed.

--g
Content-Type: message/global-delivery-status
Content-Transfer-Encoding: base64

UmVwb3J0aW5nLU1UQTogZG5zOyBteC5leGFtcGxlLmpwCgpPcmlnaW5hbC1SZWNpcGllbnQ6IHV0
Zi04OyBceHs3NTMwfVx4ezRFMkR9QGV4YW1wbGUuanAKRmluYWwtUmVjaXBpZW50OiB1dGYtODsg
55Sw5LitQGV4YW1wbGUuanAKQWN0aW9uOiBmYWlsZWQKU3RhdHVzOiA1LjEuMQpEaWFnbm9zdGlj
LUNvZGU6IHNtdHA7IDU1MCA1LjEuMSBubyBzdWNoIHVzZXIK

--g
Content-Type: message/global-headers

Message-ID: <cmp_JP.c1@mc.example>
To: =?utf-8?b?55Sw5Lit?= <田中@example.jp>
X-Mailcore-Campaign: cmp_JP

--g--
"""

YAHOO_ARF = f"""\
Return-Path: <feedback@arf.mail.yahoo.com>
From: feedback@arf.mail.yahoo.com
To: fbl@mc.example
Subject: FW: Summer offers
Date: Fri, 7 Jun 2024 12:00:05 +0000
Message-ID: <1717761605.7512.yahoo.arf@arf.mail.yahoo.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
	boundary="----=_Part_6634_1190131373.1717761605000"

------=_Part_6634_1190131373.1717761605000
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP 198.51.100.7 on
Fri, 07 Jun 2024 12:00:00 +0000.
For more information about this format please see http://www.mipassoc.org/arf/.

------=_Part_6634_1190131373.1717761605000
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 0.1
Original-Mail-From: <{VERP}>
Original-Rcpt-To: <reader@yahoo.com>
Received-Date: Fri, 07 Jun 2024 12:00:00 +0000
Reported-Domain: acme.example
Authentication-Results: mta1000.mail.gq1.yahoo.com  from=acme.example;
  domainkeys=neutral (no sig);  from=acme.example; dkim=pass (ok)

------=_Part_6634_1190131373.1717761605000
Content-Type: message/rfc822

Return-Path: <{VERP}>
Received: from 198.51.100.7  (EHLO mc.example) (198.51.100.7)
  by mta1000.mail.gq1.yahoo.com with SMTP; Fri, 07 Jun 2024 12:00:00 +0000
Message-ID: <cmp_7Hq.c77@mc.example>
From: "Acme News" <news@acme.example>
To: reader@yahoo.com
Subject: Summer offers
X-Mailcore-Campaign: cmp_7Hq
Date: Fri, 07 Jun 2024 11:59:59 +0000

Hello reader.

------=_Part_6634_1190131373.1717761605000--
"""

# Microsoft JMRP: recipient redacted, kept in X-HmXmrOriginalRecipient of the original.
JMRP_ARF = f"""\
X-HmXmrOriginalRecipient: <reader@outlook.com>
From: staff@hotmail.com
To: jmrp@mc.example
Subject: complaint about message from 198.51.100.7
Date: Sat, 8 Jun 2024 07:30:00 -0700
MIME-Version: 1.0
Content-Type: multipart/report; report-type="feedback-report";
	boundary="--boundary_3307_e3a1f2c4-0b1d-4e4a-9a55-aa0c1d3e7f01"
Message-ID: <BAY004-MC1F7.hotmail.com>

----boundary_3307_e3a1f2c4-0b1d-4e4a-9a55-aa0c1d3e7f01
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP 198.51.100.7 on
Sat, 08 Jun 2024 07:29:12 -0700.

----boundary_3307_e3a1f2c4-0b1d-4e4a-9a55-aa0c1d3e7f01
Content-Type: message/feedback-report
Content-Disposition: inline

Feedback-Type: abuse
User-Agent: Microsoft JMRP
Version: 1.0
Original-Mail-From: <{VERP}>
Arrival-Date: Sat, 08 Jun 2024 07:29:12 -0700
Source-IP: 198.51.100.7
Reported-Domain: acme.example
Reported-Domain: mc.example

----boundary_3307_e3a1f2c4-0b1d-4e4a-9a55-aa0c1d3e7f01
Content-Type: message/rfc822
Content-Disposition: inline

X-HmXmrOriginalRecipient: <reader@outlook.com>
Return-Path: {VERP}
Message-ID: <cmp_7Hq.c78@mc.example>
From: Acme News <news@acme.example>
To: <redacted@outlook.com>
Subject: Summer offers
X-Mailcore-Campaign: cmp_7Hq

Hello.

----boundary_3307_e3a1f2c4-0b1d-4e4a-9a55-aa0c1d3e7f01--
"""

# --- plain-text bounces (no message/delivery-status) -----------------------------------

EXIM_PLAIN = f"""\
Return-path: <>
Envelope-to: {VERP}
X-Failed-Recipients: carol@example.net
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mail.example.net>
To: {VERP}
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1sEb2X-0004aa-9C@mail.example.net>
Date: Tue, 04 Jun 2024 11:30:00 +0000

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  carol@example.net
    host mx.example.net [192.0.2.44]
    SMTP error from remote mail server after RCPT TO:<carol@example.net>:
    550 5.1.1 <carol@example.net>: Recipient address rejected: User unknown

------ This is a copy of the message, including all the headers. ------

Return-path: <{VERP}>
Message-ID: <cmp_7Hq.c50@mc.example>
From: "Acme News" <news@acme.example>
To: carol@example.net
Subject: Summer offers
X-Mailcore-Campaign: cmp_7Hq

Hello Carol.
"""

QMAIL_PLAIN = f"""\
Return-Path: <>
From: MAILER-DAEMON@mail.example.com
To: {VERP}
Subject: failure notice
Date: 5 Jun 2024 09:12:44 -0000

Hi. This is the qmail-send program at mail.example.com.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<dave@example.com>:
192.0.2.60 does not like recipient.
Remote host said: 550 No such user here
Giving up on 192.0.2.60.

--- Below this line is a copy of the message.

Return-Path: <{VERP}>
Message-ID: <cmp_7Hq.c51@mc.example>
From: "Acme News" <news@acme.example>
To: dave@example.com
Subject: Summer offers

Hello Dave.
"""

GMAIL_PLAIN = """\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounces@mc.example
Subject: Delivery Status Notification (Failure)
Content-Type: text/plain; charset=ISO-8859-1

Delivery to the following recipient failed permanently:

     erin@example.org

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for the
recipient domain example.org by mx.example.org. [203.0.113.9].

The error that the other server returned was:
550 5.1.1 <erin@example.org>... No such user
"""

# --- look-alikes that must not be classified -------------------------------------------

EXIM_DELAY_WARNING = f"""\
From: Mail Delivery System <Mailer-Daemon@mail.example.net>
To: {VERP}
Subject: Warning: message 1sEa9Q-0003xz-2B delayed 24 hours

This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mail.example.net.

  frank@example.net
    host mx.example.net [192.0.2.44]: 451 4.3.0 Temporary lookup failure

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered. Eventually the mail delivery software will give up,
and when that happens, the message will be returned to you.
"""

AMBIGUOUS_PLAIN = f"""\
From: MAILER-DAEMON@mail.example.net
To: {VERP}
Subject: Mail delivery failed

Delivery to these addresses failed:

  gina@example.net
  hank@example.net

550 5.1.1 User unknown
"""

NEWSLETTER_REPLY = f"""\
From: Jane Doe <jane.doe@example.org>
To: {VERP}
Subject: Re: Summer offers
In-Reply-To: <cmp_7Hq.c42@mc.example>
Content-Type: text/plain; charset=utf-8

Thanks! By the way my old address bob@example.net gave me a 550 error, use this one.
"""

HUMAN_ABOUT_BOUNCE = """\
From: Ops <ops@acme.example>
To: news@acme.example
Subject: Re: Mail delivery failed: returning message to sender

I keep getting "550 5.1.1 User unknown" for ivan@example.net and judy@example.net,
can someone look at it?
"""

OUT_OF_OFFICE = """\
From: Kim <kim@example.com>
To: bounces@mc.example
Subject: Automatic reply: Summer offers
Auto-Submitted: auto-replied
X-Auto-Response-Suppress: All
Content-Type: text/plain; charset=utf-8

I am out of the office until Monday. Mails to kim@example.com are not read.
"""

READ_RECEIPT = """\
From: Kim <kim@example.com>
To: news@acme.example
Subject: Read: Summer offers
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="r"

--r
Content-Type: text/plain

Your message was read.

--r
Content-Type: message/disposition-notification

Reporting-UA: mail.example.com; Webmail
Final-Recipient: rfc822; kim@example.com
Original-Message-ID: <cmp_7Hq.c60@mc.example>
Disposition: manual-action/MDN-sent-manually; displayed

--r--
"""

DSN_FIXTURES = {
    "postfix": POSTFIX_USER_UNKNOWN,
    "exim": EXIM_DSN,
    "gmail": GMAIL_DSN,
    "o365": O365_NDR,
    "delayed": POSTFIX_DELAYED,
    "multi": SENDMAIL_MULTI,
    "global": GLOBAL_DSN,
}
ARF_FIXTURES = {"yahoo": YAHOO_ARF, "jmrp": JMRP_ARF}
PLAIN_BOUNCES = {"exim": EXIM_PLAIN, "qmail": QMAIL_PLAIN, "gmail": GMAIL_PLAIN}
NOT_CLASSIFIED = {
    "exim-delay-warning": EXIM_DELAY_WARNING,
    "ambiguous": AMBIGUOUS_PLAIN,
    "reply": NEWSLETTER_REPLY,
    "human-about-bounce": HUMAN_ABOUT_BOUNCE,
    "out-of-office": OUT_OF_OFFICE,
    "read-receipt": READ_RECEIPT,
    "original": ORIGINAL,
}
ALL_FIXTURES = {
    **{f"dsn-{k}": v for k, v in DSN_FIXTURES.items()},
    **{f"arf-{k}": v for k, v in ARF_FIXTURES.items()},
    **{f"plain-{k}": v for k, v in PLAIN_BOUNCES.items()},
    **{f"not-{k}": v for k, v in NOT_CLASSIFIED.items()},
}
