/*-------------------------------------------------------------------------
 *
 * phone.cpp
 *	  Phone number normalisation to E.164 through libphonenumber.
 *
 * This is the only C++ in cdp.  Everything is wrapped in try/catch: an
 * exception must never unwind into PostgreSQL's C frames, and PostgreSQL's
 * longjmp-based errors must never unwind through these frames (we call
 * nothing of PostgreSQL here).
 *
 *-------------------------------------------------------------------------
 */
#include <cstdio>
#include <cstring>
#include <string>

#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

#include "phone.h"

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;

static const char *
parse_error_text(PhoneNumberUtil::ErrorType e)
{
	switch (e)
	{
		case PhoneNumberUtil::INVALID_COUNTRY_CODE_ERROR:
			return "phone number has an unknown country code";
		case PhoneNumberUtil::NOT_A_NUMBER:
			return "phone is not a phone number";
		case PhoneNumberUtil::TOO_SHORT_AFTER_IDD:
			return "phone number is too short after its international prefix";
		case PhoneNumberUtil::TOO_SHORT_NSN:
			return "phone number is too short";
		case PhoneNumberUtil::TOO_LONG_NSN:
			return "phone number is too long";
		default:
			return "phone number cannot be parsed";
	}
}

extern "C" bool
phone_to_e164(const char *number, size_t len, const char *region,
			  char out[PHONE_E164_BUFSIZE], char *err, size_t errlen)
{
	try
	{
		const PhoneNumberUtil *util = PhoneNumberUtil::GetInstance();
		PhoneNumber parsed;
		std::string e164;
		PhoneNumberUtil::ErrorType rc;

		rc = util->Parse(std::string(number, len), region, &parsed);
		if (rc != PhoneNumberUtil::NO_PARSING_ERROR)
		{
			snprintf(err, errlen, "%s", parse_error_text(rc));
			return false;
		}
		if (!util->IsValidNumber(parsed))
		{
			std::string r;

			util->GetRegionCodeForCountryCode(parsed.country_code(), &r);
			snprintf(err, errlen,
					 "phone number is not a valid number of country code +%d (%s)",
					 parsed.country_code(), r.c_str());
			return false;
		}
		util->Format(parsed, PhoneNumberUtil::E164, &e164);
		if (e164.size() >= PHONE_E164_BUFSIZE)
		{
			snprintf(err, errlen, "phone number is too long");
			return false;
		}
		memcpy(out, e164.c_str(), e164.size() + 1);
		return true;
	}
	catch (...)
	{
		snprintf(err, errlen, "phone number could not be processed by libphonenumber");
		return false;
	}
}

extern "C" bool
phone_region_supported(const char *region)
{
	try
	{
		return PhoneNumberUtil::GetInstance()->GetCountryCodeForRegion(region) != 0;
	}
	catch (...)
	{
		return false;
	}
}
