//! The Security.framework and CoreFoundation calls that `security-framework` does not wrap,
//! behind safe functions; the only module of the agent with `unsafe`.
//!
//! What it declares itself: key generation attributes (`kSecAttrIsExtractable`,
//! `kSecAttrAccess`), key lookups that never copy a private key's attributes, the key's
//! extractability read from its database record (`SecKeychainItemCopyAttributesAndData`),
//! access objects and ACL entries (`SecAccessCreate`, `SecTrustedApplicationCreateFromPath`,
//! `SecTrustedApplicationCreateFromRequirement`, `SecAccessCopyMatchingACLList`,
//! `SecACLCopyContents`, `SecACLSetContents`, `SecACLUpdateAuthorizations`, `SecACLRemove`),
//! the partition-list change `SecKeychainItemSetAccessWithPassword` (exported by
//! Security.framework and used by `security set-key-partition-list`, but absent from the public
//! headers, so it is looked up with `dlsym` at run time instead of linked), identity
//! preferences (`SecIdentitySetPreferred`, and the `iprf` items themselves through
//! `SecItemCopyMatching`), keychain deletion, and CFPreferences. Property-list values cross the
//! boundary as XML, converted to and from [`plist::Value`], so no CF type leaks into the rest of
//! the backend.
//!
//! Where a call's behaviour is not what its name suggests, the comment names the file of
//! Apple's Security sources (apple-oss-distributions/Security, read at Security-61901) that
//! shows it.
#![allow(unsafe_code, reason = "the FFI boundary to Security.framework and CoreFoundation")]

use std::ffi::{c_char, c_void};
use std::ptr;

use core_foundation::array::{CFArray, CFArrayRef};
use core_foundation::base::{Boolean, CFType, CFTypeRef, OSStatus, TCFType};
use core_foundation::boolean::CFBoolean;
use core_foundation::data::CFData;
use core_foundation::dictionary::CFDictionary;
use core_foundation::error::{CFError, CFErrorRef};
use core_foundation::number::CFNumber;
use core_foundation::propertylist::{
    CFPropertyList, CFPropertyListRef, create_data, create_with_data, kCFPropertyListImmutable,
    kCFPropertyListXMLFormat_v1_0,
};
use core_foundation::string::{CFString, CFStringRef};
use security_framework::base::Error as SecError;
use security_framework::certificate::SecCertificate;
use security_framework::identity::SecIdentity;
use security_framework::key::SecKey;
use security_framework::os::macos::access::SecAccess;
use security_framework::os::macos::code_signing::SecRequirement;
use security_framework::os::macos::keychain::SecKeychain;
use security_framework::os::macos::keychain_item::SecKeychainItem;
use security_framework_sys::base::{
    SecAccessRef, SecIdentityRef, SecKeyRef, SecKeychainAttribute, SecKeychainAttributeList,
    SecKeychainItemRef, SecKeychainRef, errSecItemNotFound, errSecSuccess,
};
use security_framework_sys::code_signing::SecRequirementRef;
use security_framework_sys::item::{
    kSecAttrAccount, kSecAttrApplicationLabel, kSecAttrIsPermanent, kSecAttrKeyClass,
    kSecAttrKeyClassPrivate, kSecAttrKeyClassPublic, kSecAttrKeySizeInBits, kSecAttrKeyType,
    kSecAttrKeyTypeECSECPrimeRandom, kSecAttrLabel, kSecAttrService, kSecClass, kSecClassGenericPassword,
    kSecClassKey, kSecMatchLimit, kSecMatchLimitAll, kSecMatchSearchList, kSecPrivateKeyAttrs,
    kSecPublicKeyAttrs, kSecReturnAttributes, kSecReturnRef, kSecUseKeychain, kSecValueData, kSecValueRef,
};
use security_framework_sys::key::SecKeyCreateRandomKey;
use security_framework_sys::keychain_item::{SecItemAdd, SecItemCopyMatching, SecKeychainItemDelete};

type SecTrustedApplicationRef = *mut c_void;
type SecACLRef = *mut c_void;
type SecKeychainPromptSelector = u16;

/// `SecKeychainAttributeInfo` (`SecKeychainItem.h`): which attributes to read, and as what.
#[repr(C)]
struct SecKeychainAttributeInfo {
    count: u32,
    tag: *mut u32,
    format: *mut u32,
}

/// The key record's attribute number `kSecKeyExtractable` (`SecKey.h`; the "Extractable" column
/// of `OSX/libsecurity_cdsa_utilities/lib/KeySchema.m4`, written from the key's header by
/// `OSX/libsecurity_sd_cspdl/lib/SDKey.cpp`).
const KEY_ATTR_EXTRACTABLE: u32 = 16;
/// `CSSM_DB_ATTRIBUTE_FORMAT_UINT32`.
const FORMAT_UINT32: u32 = 2;
/// The item type of identity preferences, the four characters `iprf`
/// (`_SecIdentityCopyPreferenceMatchingName`, `OSX/libsecurity_keychain/lib/SecIdentity.cpp`).
const IDENTITY_PREFERENCE_TYPE: i32 = i32::from_be_bytes(*b"iprf");
type SetAccessWithPassword =
    unsafe extern "C" fn(SecKeychainItemRef, SecAccessRef, u32, *const c_void) -> OSStatus;

#[link(name = "Security", kind = "framework")]
unsafe extern "C" {
    static kSecAttrIsExtractable: CFStringRef;
    static kSecAttrAccess: CFStringRef;
    static kSecAttrType: CFStringRef;
    static kSecAttrGeneric: CFStringRef;
    static kSecACLAuthorizationPartitionID: CFStringRef;
    static kSecACLAuthorizationSign: CFStringRef;
    static kSecACLAuthorizationAny: CFStringRef;
    static kSecACLAuthorizationChangeACL: CFStringRef;
    static kSecACLAuthorizationExportClear: CFStringRef;
    static kSecACLAuthorizationExportWrapped: CFStringRef;

    fn SecTrustedApplicationCreateFromRequirement(
        description: *const c_char,
        requirement: SecRequirementRef,
        app: *mut SecTrustedApplicationRef,
    ) -> OSStatus;
    fn SecACLUpdateAuthorizations(acl: SecACLRef, authorizations: CFArrayRef) -> OSStatus;
    fn SecACLRemove(acl: SecACLRef) -> OSStatus;
    fn SecKeychainItemCopyAttributesAndData(
        item: SecKeychainItemRef,
        info: *mut SecKeychainAttributeInfo,
        item_class: *mut u32,
        attr_list: *mut *mut SecKeychainAttributeList,
        length: *mut u32,
        out_data: *mut *mut c_void,
    ) -> OSStatus;
    fn SecKeychainItemFreeAttributesAndData(
        attr_list: *mut SecKeychainAttributeList,
        data: *mut c_void,
    ) -> OSStatus;
    fn SecKeychainItemCopyFromPersistentReference(
        persistent_ref: core_foundation::data::CFDataRef,
        item: *mut SecKeychainItemRef,
    ) -> OSStatus;

    fn SecTrustedApplicationCreateFromPath(
        path: *const c_char,
        app: *mut SecTrustedApplicationRef,
    ) -> OSStatus;
    fn SecAccessCreate(
        descriptor: CFStringRef,
        trustedlist: CFArrayRef,
        access: *mut SecAccessRef,
    ) -> OSStatus;
    fn SecKeychainItemCopyAccess(item: SecKeychainItemRef, access: *mut SecAccessRef) -> OSStatus;
    fn SecAccessCopyMatchingACLList(access: SecAccessRef, authorization_tag: CFTypeRef) -> CFArrayRef;
    fn SecACLCopyContents(
        acl: SecACLRef,
        application_list: *mut CFArrayRef,
        description: *mut CFStringRef,
        prompt_selector: *mut SecKeychainPromptSelector,
    ) -> OSStatus;
    fn SecACLCopyAuthorizations(acl: SecACLRef) -> CFArrayRef;
    fn SecACLSetContents(
        acl: SecACLRef,
        application_list: CFArrayRef,
        description: CFStringRef,
        prompt_selector: SecKeychainPromptSelector,
    ) -> OSStatus;
    fn SecIdentitySetPreferred(
        identity: SecIdentityRef,
        name: CFStringRef,
        key_usage: CFArrayRef,
    ) -> OSStatus;
    fn SecKeychainDelete(keychain_or_array: SecKeychainRef) -> OSStatus;
}

#[link(name = "CoreFoundation", kind = "framework")]
unsafe extern "C" {
    static kCFPreferencesCurrentUser: CFStringRef;
    static kCFPreferencesAnyHost: CFStringRef;

    fn CFPreferencesCopyAppValue(key: CFStringRef, application_id: CFStringRef) -> CFPropertyListRef;
    fn CFPreferencesAppValueIsForced(key: CFStringRef, application_id: CFStringRef) -> Boolean;
    fn CFPreferencesCopyValue(
        key: CFStringRef,
        application_id: CFStringRef,
        user_name: CFStringRef,
        host_name: CFStringRef,
    ) -> CFPropertyListRef;
    fn CFPreferencesSetValue(
        key: CFStringRef,
        value: CFPropertyListRef,
        application_id: CFStringRef,
        user_name: CFStringRef,
        host_name: CFStringRef,
    );
    fn CFPreferencesSynchronize(
        application_id: CFStringRef,
        user_name: CFStringRef,
        host_name: CFStringRef,
    ) -> Boolean;
}

// libSystem, always linked.
unsafe extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// `RTLD_DEFAULT` on Apple platforms: search every image loaded into the process.
const RTLD_DEFAULT: *mut c_void = -2isize as *mut c_void;

/// A failed call: what was attempted and the framework's explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(super) enum SysError {
    /// A Security.framework call returned an error status.
    #[error("{call} failed: {message} ({status})")]
    Status {
        /// The function.
        call: &'static str,
        /// The OSStatus.
        status: i32,
        /// `SecCopyErrorMessageString`'s text.
        message: String,
    },
    /// A call that reports through `CFError` or a NULL result failed.
    #[error("{call} failed: {message}")]
    Failed {
        /// The function.
        call: &'static str,
        /// What is known.
        message: String,
    },
}

impl SysError {
    /// The OSStatus, if the failure carried one.
    pub(super) fn status(&self) -> Option<i32> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Failed { .. } => None,
        }
    }
}

fn check(call: &'static str, status: OSStatus) -> Result<(), SysError> {
    if status == errSecSuccess {
        Ok(())
    } else {
        let message = SecError::from_code(status).message().unwrap_or_else(|| "unknown error".to_owned());
        Err(SysError::Status { call, status, message })
    }
}

fn cf_key(key: CFStringRef) -> CFString {
    // SAFETY: `key` is one of the framework's constant CFString globals, valid for the life of
    // the process; the get rule retains it for the wrapper.
    unsafe { CFString::wrap_under_get_rule(key) }
}

/// The framework's constant keys this module uses, read once per call site.
struct Keys {
    class: CFStringRef,
    class_generic_password: CFStringRef,
    service: CFStringRef,
    account: CFStringRef,
    label: CFStringRef,
    value_data: CFStringRef,
    use_keychain: CFStringRef,
    access: CFStringRef,
    is_permanent: CFStringRef,
    is_extractable: CFStringRef,
    key_type: CFStringRef,
    key_type_ec: CFStringRef,
    key_size: CFStringRef,
    private_attrs: CFStringRef,
    public_attrs: CFStringRef,
    partition_id: CFStringRef,
    sign: CFStringRef,
    any: CFStringRef,
    change_acl: CFStringRef,
    export_clear: CFStringRef,
    export_wrapped: CFStringRef,
    class_key: CFStringRef,
    key_class: CFStringRef,
    key_class_private: CFStringRef,
    key_class_public: CFStringRef,
    application_label: CFStringRef,
    search_list: CFStringRef,
    return_ref: CFStringRef,
    return_attributes: CFStringRef,
    match_limit: CFStringRef,
    match_limit_all: CFStringRef,
    value_ref: CFStringRef,
    item_type: CFStringRef,
    generic: CFStringRef,
}

fn keys() -> Keys {
    // SAFETY: these are immutable CFString constants exported by Security.framework, set up
    // by the loader before any of our code runs; reading them has no side effect.
    unsafe {
        Keys {
            class: kSecClass,
            class_generic_password: kSecClassGenericPassword,
            service: kSecAttrService,
            account: kSecAttrAccount,
            label: kSecAttrLabel,
            value_data: kSecValueData,
            use_keychain: kSecUseKeychain,
            access: kSecAttrAccess,
            is_permanent: kSecAttrIsPermanent,
            is_extractable: kSecAttrIsExtractable,
            key_type: kSecAttrKeyType,
            key_type_ec: kSecAttrKeyTypeECSECPrimeRandom,
            key_size: kSecAttrKeySizeInBits,
            private_attrs: kSecPrivateKeyAttrs,
            public_attrs: kSecPublicKeyAttrs,
            partition_id: kSecACLAuthorizationPartitionID,
            sign: kSecACLAuthorizationSign,
            any: kSecACLAuthorizationAny,
            change_acl: kSecACLAuthorizationChangeACL,
            export_clear: kSecACLAuthorizationExportClear,
            export_wrapped: kSecACLAuthorizationExportWrapped,
            class_key: kSecClassKey,
            key_class: kSecAttrKeyClass,
            key_class_private: kSecAttrKeyClassPrivate,
            key_class_public: kSecAttrKeyClassPublic,
            application_label: kSecAttrApplicationLabel,
            search_list: kSecMatchSearchList,
            return_ref: kSecReturnRef,
            return_attributes: kSecReturnAttributes,
            match_limit: kSecMatchLimit,
            match_limit_all: kSecMatchLimitAll,
            value_ref: kSecValueRef,
            item_type: kSecAttrType,
            generic: kSecAttrGeneric,
        }
    }
}

/// The calling executable as a trusted application (its designated requirement, or for
/// unsigned code a hash of the file).
fn this_application() -> Result<CFType, SysError> {
    let mut app: SecTrustedApplicationRef = ptr::null_mut();
    // SAFETY: a NULL path means "the calling application"; `app` receives a +1 reference.
    check("SecTrustedApplicationCreateFromPath", unsafe {
        SecTrustedApplicationCreateFromPath(ptr::null(), &mut app)
    })?;
    // SAFETY: `app` is a valid, owned CF object returned just above.
    Ok(unsafe { CFType::wrap_under_create_rule(app as CFTypeRef) })
}

/// An access object whose trusted-application list is only the calling executable, as the
/// "allow only this app" default of Keychain Access. Used for the keychain password item.
pub(super) fn access_for_this_app(descriptor: &str) -> Result<SecAccess, SysError> {
    let trusted = CFArray::from_CFTypes(&[this_application()?]);
    let descriptor = CFString::new(descriptor);
    let mut access: SecAccessRef = ptr::null_mut();
    // SAFETY: all arguments are valid CF objects kept alive for the call; `access` receives a
    // +1 reference on success.
    check("SecAccessCreate", unsafe {
        SecAccessCreate(descriptor.as_concrete_TypeRef(), trusted.as_concrete_TypeRef(), &mut access)
    })?;
    // SAFETY: success above means `access` is a valid owned SecAccessRef.
    Ok(unsafe { SecAccess::wrap_under_create_rule(access) })
}

/// Adds a generic password item to `keychain` with `access` as its ACL.
pub(super) fn add_generic_password(
    keychain: &SecKeychain,
    service: &str,
    account: &str,
    label: &str,
    password: &[u8],
    access: &SecAccess,
) -> Result<(), SysError> {
    let k = keys();
    let pairs: Vec<(CFString, CFType)> = vec![
        (cf_key(k.class), cf_key(k.class_generic_password).as_CFType()),
        (cf_key(k.service), CFString::new(service).as_CFType()),
        (cf_key(k.account), CFString::new(account).as_CFType()),
        (cf_key(k.label), CFString::new(label).as_CFType()),
        (cf_key(k.value_data), CFData::from_buffer(password).as_CFType()),
        (cf_key(k.use_keychain), keychain.as_CFType()),
        (cf_key(k.access), access.as_CFType()),
    ];
    let query = CFDictionary::from_CFType_pairs(&pairs);
    // SAFETY: `query` is a valid dictionary; a NULL result pointer asks for no result.
    check("SecItemAdd", unsafe { SecItemAdd(query.as_concrete_TypeRef(), ptr::null_mut()) })
}

/// Generates an ECDSA P-256 key pair inside `keychain`: permanent, not extractable, labelled
/// `label`. The private key is returned; its bytes never exist outside the keychain.
///
/// For a file keychain `SecKeyCreateRandomKey` takes the CDSA path (`GetKeyParameters` in
/// `OSX/libsecurity_keychain/lib/SecKey.cpp`): it starts from `CSSM_KEYATTR_EXTRACTABLE` and
/// clears it only when `kSecAttrIsExtractable` is false *in the top-level dictionary*; the same
/// key inside `kSecPrivateKeyAttrs` is ignored, and `kSecAttrIsSensitive` is read nowhere. So
/// the attribute goes at the top, and [`key_is_extractable`] checks the result.
pub(super) fn generate_p256_key(keychain: &SecKeychain, label: &str) -> Result<SecKey, SysError> {
    let k = keys();
    let yes = CFBoolean::true_value().as_CFType();
    let no = CFBoolean::false_value().as_CFType();
    let private_attrs = CFDictionary::from_CFType_pairs(&[
        (cf_key(k.is_permanent), yes.clone()),
        (cf_key(k.label), CFString::new(label).as_CFType()),
    ]);
    let public_attrs = CFDictionary::from_CFType_pairs(&[
        (cf_key(k.is_permanent), yes),
        (cf_key(k.label), CFString::new(label).as_CFType()),
    ]);
    let params = CFDictionary::from_CFType_pairs(&[
        (cf_key(k.key_type), cf_key(k.key_type_ec).as_CFType()),
        (cf_key(k.key_size), CFNumber::from(256i32).as_CFType()),
        (cf_key(k.use_keychain), keychain.as_CFType()),
        (cf_key(k.is_extractable), no),
        (cf_key(k.private_attrs), private_attrs.as_CFType()),
        (cf_key(k.public_attrs), public_attrs.as_CFType()),
    ]);
    let mut error: CFErrorRef = ptr::null_mut();
    // SAFETY: `params` is a valid dictionary; on failure the function returns NULL and sets
    // `error` to a +1 CFError.
    let key: SecKeyRef = unsafe { SecKeyCreateRandomKey(params.as_concrete_TypeRef(), &mut error) };
    if key.is_null() {
        let message = if error.is_null() {
            "no error reported".to_owned()
        } else {
            // SAFETY: a non-NULL `error` is an owned CFError.
            unsafe { CFError::wrap_under_create_rule(error) }.description().to_string()
        };
        return Err(SysError::Failed { call: "SecKeyCreateRandomKey", message });
    }
    // SAFETY: a non-NULL result is an owned SecKeyRef.
    Ok(unsafe { SecKey::wrap_under_create_rule(key) })
}

/// Whether a private key in a file keychain can leave it, read from the key's database record
/// (its "Extractable" attribute) without touching the key itself.
///
/// `SecKeyCopyAttributes` is not used for this or anything else on our private keys: for a
/// CDSA key it calls `SecCDSAKeyCopyExternalRepresentation` (`SecKey.cpp`), which wraps the key
/// out in the clear whenever the ACL lets it.
pub(super) fn key_is_extractable(key: &SecKey) -> Result<bool, SysError> {
    let mut tags = [KEY_ATTR_EXTRACTABLE];
    let mut formats = [FORMAT_UINT32];
    let mut info =
        SecKeychainAttributeInfo { count: 1, tag: tags.as_mut_ptr(), format: formats.as_mut_ptr() };
    let mut list: *mut SecKeychainAttributeList = ptr::null_mut();
    // SAFETY: `key` is a keychain item of a file keychain (a CDSA key is one); `info` points at
    // one tag and one format that outlive the call; NULL length and data pointers ask for the
    // attributes only, never the key's data. `list` receives an allocation freed below.
    check("SecKeychainItemCopyAttributesAndData", unsafe {
        SecKeychainItemCopyAttributesAndData(
            key.as_concrete_TypeRef() as SecKeychainItemRef,
            &mut info,
            ptr::null_mut(),
            &mut list,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    })?;
    let mut extractable = None;
    if !list.is_null() {
        // SAFETY: on success `list` points at a list of `count` attributes, each with `length`
        // bytes at `data` (or NULL), valid until freed.
        let attrs: &[SecKeychainAttribute] = unsafe {
            let list = &*list;
            if list.attr.is_null() { &[] } else { std::slice::from_raw_parts(list.attr, list.count as usize) }
        };
        for attr in attrs {
            let value = (!attr.data.is_null() && attr.length as usize >= 4).then(|| {
                // SAFETY: at least four readable bytes at `data`, which need not be aligned.
                unsafe { ptr::read_unaligned(attr.data.cast::<u32>()) }
            });
            if attr.tag == KEY_ATTR_EXTRACTABLE {
                extractable = value;
            }
        }
        // SAFETY: `list` came from SecKeychainItemCopyAttributesAndData and is freed once.
        unsafe { SecKeychainItemFreeAttributesAndData(list, ptr::null_mut()) };
    }
    match extractable {
        Some(value) => Ok(value != 0),
        None => Err(SysError::Failed {
            call: "SecKeychainItemCopyAttributesAndData",
            message: "the key record has no extractable attribute".to_owned(),
        }),
    }
}

/// A key found in a keychain, with its application label (the SHA-1 of its public key, shared
/// by the private and the public key's records, `KeyItem.cpp`), read from the item's
/// attributes and not from the key.
pub(super) struct FoundKey {
    /// The key.
    pub key: SecKey,
    /// `kSecAttrApplicationLabel`.
    pub label: Vec<u8>,
}

/// Every item matching `pairs`, as dictionaries of its attributes with its reference under
/// `kSecValueRef` (`SecItemCopyMatching` with references, attributes and no limit); none found
/// is an empty list.
fn copy_matching(
    mut pairs: Vec<(CFString, CFType)>,
) -> Result<Vec<CFDictionary<CFString, CFType>>, SysError> {
    let k = keys();
    let yes = CFBoolean::true_value().as_CFType();
    pairs.extend([
        (cf_key(k.return_ref), yes.clone()),
        (cf_key(k.return_attributes), yes),
        (cf_key(k.match_limit), cf_key(k.match_limit_all).as_CFType()),
    ]);
    let query = CFDictionary::from_CFType_pairs(&pairs);
    let mut result: CFTypeRef = ptr::null();
    // SAFETY: `query` is a valid dictionary; `result` receives a +1 CF object on success.
    let status = unsafe { SecItemCopyMatching(query.as_concrete_TypeRef(), &mut result) };
    if status == errSecItemNotFound {
        return Ok(Vec::new());
    }
    check("SecItemCopyMatching", status)?;
    Ok(dictionaries(result))
}

fn dictionaries(result: CFTypeRef) -> Vec<CFDictionary<CFString, CFType>> {
    if result.is_null() {
        return Vec::new();
    }
    // SAFETY: a non-NULL result of SecItemCopyMatching is an owned CF object.
    let result = unsafe { CFType::wrap_under_create_rule(result) };
    let Some(array) = result.downcast::<CFArray>() else { return Vec::new() };
    array
        .iter()
        .filter_map(|item| {
            // SAFETY: every element of a CFArray is a valid CF object; the get rule retains it.
            let item = unsafe { CFType::wrap_under_get_rule(*item as CFTypeRef) };
            let dict = item.downcast::<CFDictionary>()?;
            // SAFETY: the dictionaries of a SecItem result are keyed by CFString attribute
            // names and hold CF objects; the get rule retains it for the typed wrapper.
            Some(unsafe { CFDictionary::wrap_under_get_rule(dict.as_concrete_TypeRef()) })
        })
        .collect()
}

/// Which keys [`keychain_keys`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    /// Private keys.
    Private,
    /// Public keys.
    Public,
}

/// The private (or public) keys of `keychain`, or only those whose application label is
/// `label`, found by `SecItemCopyMatching` with references and attributes. That reads the
/// items' database attributes only (`_CreateAttributesDictionaryFromKeyItem` in
/// `OSX/libsecurity_keychain/lib/SecItem.cpp`), never the keys.
pub(super) fn keychain_keys(
    keychain: &SecKeychain,
    kind: KeyKind,
    label: Option<&[u8]>,
) -> Result<Vec<FoundKey>, SysError> {
    let k = keys();
    let key_class = match kind {
        KeyKind::Private => k.key_class_private,
        KeyKind::Public => k.key_class_public,
    };
    let mut pairs: Vec<(CFString, CFType)> = vec![
        (cf_key(k.class), cf_key(k.class_key).as_CFType()),
        (cf_key(k.key_class), cf_key(key_class).as_CFType()),
        (cf_key(k.search_list), CFArray::from_CFTypes(std::slice::from_ref(keychain)).as_CFType()),
    ];
    if let Some(label) = label {
        pairs.push((cf_key(k.application_label), CFData::from_buffer(label).as_CFType()));
    }
    let (value_ref, app_label) = (cf_key(k.value_ref), cf_key(k.application_label));
    Ok(copy_matching(pairs)?
        .iter()
        .filter_map(|d| {
            let key = d.find(&value_ref)?.downcast::<SecKey>()?;
            let label = d.find(&app_label)?.downcast::<CFData>()?.bytes().to_vec();
            Some(FoundKey { key, label })
        })
        .collect())
}

/// Deletes a keychain file and removes it from every search list.
pub(super) fn delete_keychain(keychain: &SecKeychain) -> Result<(), SysError> {
    // SAFETY: `keychain` is a valid SecKeychainRef kept alive by the borrow.
    check("SecKeychainDelete", unsafe { SecKeychainDelete(keychain.as_concrete_TypeRef()) })
}

fn copy_access(item: SecKeychainItemRef) -> Result<SecAccess, SysError> {
    let mut access: SecAccessRef = ptr::null_mut();
    // SAFETY: `item` is a valid keychain item kept alive by the caller; `access` receives +1.
    check("SecKeychainItemCopyAccess", unsafe { SecKeychainItemCopyAccess(item, &mut access) })?;
    // SAFETY: success means `access` is an owned SecAccessRef.
    Ok(unsafe { SecAccess::wrap_under_create_rule(access) })
}

fn matching_acls(access: &SecAccess, tag: CFStringRef) -> Vec<CFType> {
    // SAFETY: `access` is valid; `tag` is a framework constant. The result is +1 or NULL.
    let list = unsafe { SecAccessCopyMatchingACLList(access.as_concrete_TypeRef(), tag as CFTypeRef) };
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: a non-NULL result is an owned CFArray of SecACLRefs.
    let list: CFArray<CFType> = unsafe { CFArray::wrap_under_create_rule(list) };
    list.iter().map(|acl| acl.clone()).collect()
}

/// The authorization tags of an ACL entry.
fn acl_authorizations(acl: &CFType) -> Vec<CFString> {
    // SAFETY: `acl` is a valid SecACLRef; the result is a +1 CFArray of CFStrings, or NULL.
    let list = unsafe { SecACLCopyAuthorizations(acl.as_CFTypeRef() as SecACLRef) };
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: a non-NULL result is an owned CFArray of CFStrings.
    let list: CFArray<CFString> = unsafe { CFArray::wrap_under_create_rule(list) };
    list.iter().map(|tag| tag.clone()).collect()
}

struct AclContents {
    apps: Option<CFArray<CFType>>,
    description: Option<String>,
    selector: SecKeychainPromptSelector,
}

fn acl_contents(acl: &CFType) -> Result<AclContents, SysError> {
    let mut apps: CFArrayRef = ptr::null();
    let mut description: CFStringRef = ptr::null();
    let mut selector: SecKeychainPromptSelector = 0;
    // SAFETY: `acl` is a valid SecACLRef from the access's list; the out-parameters receive
    // +1 references (or NULL for "any application" / no description).
    check("SecACLCopyContents", unsafe {
        SecACLCopyContents(acl.as_CFTypeRef() as SecACLRef, &mut apps, &mut description, &mut selector)
    })?;
    // SAFETY: non-NULL out-parameters are owned references of the documented types.
    let apps = (!apps.is_null()).then(|| unsafe { CFArray::wrap_under_create_rule(apps) });
    let description = (!description.is_null())
        .then(|| unsafe { CFString::wrap_under_create_rule(description) }.to_string());
    Ok(AclContents { apps, description, selector })
}

fn set_acl_contents(
    acl: &CFType,
    apps: Option<&CFArray<CFType>>,
    description: &str,
    selector: SecKeychainPromptSelector,
) -> Result<(), SysError> {
    let description = CFString::new(description);
    let apps = apps.map_or(ptr::null(), |a| a.as_concrete_TypeRef());
    // SAFETY: all arguments are valid for the call; a NULL application list means "any
    // application", which is what we pass for the signing entry.
    check("SecACLSetContents", unsafe {
        SecACLSetContents(acl.as_CFTypeRef() as SecACLRef, apps, description.as_concrete_TypeRef(), selector)
    })
}

fn set_access_with_password() -> Result<SetAccessWithPassword, SysError> {
    let name = c"SecKeychainItemSetAccessWithPassword";
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks a symbol up.
    let symbol = unsafe { dlsym(RTLD_DEFAULT, name.as_ptr()) };
    if symbol.is_null() {
        return Err(SysError::Failed {
            call: "dlsym",
            message: format!("{} is not available on this macOS", name.to_string_lossy()),
        });
    }
    // SAFETY: the symbol is Security.framework's function of this exact signature (the one
    // `security set-key-partition-list` calls).
    Ok(unsafe { std::mem::transmute::<*mut c_void, SetAccessWithPassword>(symbol) })
}

/// A trusted application for each code requirement (code signing requirement language), for
/// the signing ACL entry.
pub(super) fn trusted_applications(requirements: &[String]) -> Result<Vec<CFType>, SysError> {
    let mut out = Vec::with_capacity(requirements.len() + 1);
    out.push(this_application()?);
    for text in requirements {
        let requirement: SecRequirement = text.parse().map_err(|e: SecError| SysError::Failed {
            call: "SecRequirementCreateWithString",
            message: format!("{text}: {}", e.message().unwrap_or_default()),
        })?;
        let mut app: SecTrustedApplicationRef = ptr::null_mut();
        // SAFETY: `requirement` is valid for the call; a NULL description is the documented
        // default ("csreq://", `OSX/libsecurity_keychain/lib/SecTrustedApplication.cpp`); `app`
        // receives a +1 reference.
        check("SecTrustedApplicationCreateFromRequirement", unsafe {
            SecTrustedApplicationCreateFromRequirement(
                ptr::null(),
                requirement.as_concrete_TypeRef(),
                &mut app,
            )
        })?;
        // SAFETY: success means `app` is a valid, owned CF object.
        out.push(unsafe { CFType::wrap_under_create_rule(app as CFTypeRef) });
    }
    Ok(out)
}

fn update_authorizations(acl: &CFType, tags: &[CFString]) -> Result<(), SysError> {
    let tags = CFArray::from_CFTypes(tags);
    // SAFETY: `acl` is a valid SecACLRef of the access being edited; `tags` a CFArray of the
    // framework's authorization constants.
    check("SecACLUpdateAuthorizations", unsafe {
        SecACLUpdateAuthorizations(acl.as_CFTypeRef() as SecACLRef, tags.as_concrete_TypeRef())
    })
}

fn remove_acl(acl: &CFType) -> Result<(), SysError> {
    // SAFETY: `acl` is a valid SecACLRef of the access being edited.
    check("SecACLRemove", unsafe { SecACLRemove(acl.as_CFTypeRef() as SecACLRef) })
}

/// Rewrites a private key's access, authorised with the keychain password exactly as
/// `security set-key-partition-list -S ... -k <password>` does, but without the password ever
/// reaching an argument vector:
///
/// * the partition list becomes the hex `description` (see
///   [`super::allowlist::encode_description`]);
/// * the entry that grants signing (at generation the "limited" entry of `Access::makeStandard`,
///   `OSX/libsecurity_keychain/lib/Access.cpp`: decrypt, sign, MAC, derive, export in the clear,
///   export wrapped) grants signing alone, to `trusted` ([`trusted_applications`]) only;
/// * every other entry but the owner's loses export in the clear and export wrapped (one that
///   granted everything keeps signing; one left with nothing is removed: an empty authorization
///   set means "everything", `ACL::authorizes`).
///
/// securityd checks both the ACL and the partition list (`SecurityServerAcl::validate`,
/// `securityd/src/acls.cpp`), so an app must pass both to sign, and nobody may export.
pub(super) fn set_key_access(
    key: &SecKey,
    keychain_password: &[u8],
    description: &str,
    trusted: &[CFType],
) -> Result<(), SysError> {
    let item = key.as_concrete_TypeRef() as SecKeychainItemRef;
    let access = copy_access(item)?;
    let k = keys();
    let partition_acls = matching_acls(&access, k.partition_id);
    if partition_acls.is_empty() {
        return Err(SysError::Failed {
            call: "SecAccessCopyMatchingACLList",
            message: "the key has no partition list entry".to_owned(),
        });
    }
    for acl in &partition_acls {
        let contents = acl_contents(acl)?;
        set_acl_contents(acl, contents.apps.as_ref(), description, contents.selector)?;
    }
    let (sign, any, change_acl) = (cf_key(k.sign), cf_key(k.any), cf_key(k.change_acl));
    let (export_clear, export_wrapped) = (cf_key(k.export_clear), cf_key(k.export_wrapped));
    let trusted = CFArray::from_CFTypes(trusted);
    let mut signing_entries = 0;
    for acl in &matching_acls(&access, k.sign) {
        let tags = acl_authorizations(acl);
        // The owner entry (change ACL) and an "any" entry are not the signing entry.
        if !tags.contains(&sign) || tags.contains(&any) || tags.contains(&change_acl) {
            continue;
        }
        update_authorizations(acl, std::slice::from_ref(&sign))?;
        let contents = acl_contents(acl)?;
        let keep = contents.description.unwrap_or_default();
        set_acl_contents(acl, Some(&trusted), &keep, contents.selector)?;
        signing_entries += 1;
    }
    if signing_entries == 0 {
        return Err(SysError::Failed {
            call: "SecAccessCopyMatchingACLList",
            message: "the key has no signing entry".to_owned(),
        });
    }
    for tag in [k.export_clear, k.export_wrapped] {
        for acl in &matching_acls(&access, tag) {
            let tags = acl_authorizations(acl);
            if tags.contains(&change_acl) {
                continue;
            }
            // An entry granting everything ("any") keeps signing only; one left with nothing
            // goes (an empty set would mean "everything" again).
            let rest: Vec<CFString> = if tags.contains(&any) {
                vec![sign.clone()]
            } else {
                tags.into_iter().filter(|t| *t != export_clear && *t != export_wrapped).collect()
            };
            if rest.is_empty() {
                remove_acl(acl)?;
            } else {
                update_authorizations(acl, &rest)?;
            }
        }
    }
    let set = set_access_with_password()?;
    let len = u32::try_from(keychain_password.len()).map_err(|_| SysError::Failed {
        call: "SecKeychainItemSetAccessWithPassword",
        message: "password too long".into(),
    })?;
    // SAFETY: `item` and `access` are valid for the call; the password pointer and length
    // describe `keychain_password`, which outlives the call.
    check("SecKeychainItemSetAccessWithPassword", unsafe {
        set(item, access.as_concrete_TypeRef(), len, keychain_password.as_ptr().cast())
    })
}

/// Whether any ACL entry of the key but the owner's still grants an export (a key whose access
/// an agent before 0.5 wrote, or someone changed): [`set_key_access`] is due.
pub(super) fn key_grants_export(key: &SecKey) -> Result<bool, SysError> {
    let access = copy_access(key.as_concrete_TypeRef() as SecKeychainItemRef)?;
    let k = keys();
    let change_acl = cf_key(k.change_acl);
    Ok([k.export_clear, k.export_wrapped]
        .into_iter()
        .flat_map(|tag| matching_acls(&access, tag))
        .any(|acl| !acl_authorizations(&acl).contains(&change_acl)))
}

/// The descriptions of a key's partition-list ACL entries (hex plists).
pub(super) fn key_partition_descriptions(key: &SecKey) -> Result<Vec<String>, SysError> {
    let access = copy_access(key.as_concrete_TypeRef() as SecKeychainItemRef)?;
    matching_acls(&access, keys().partition_id)
        .iter()
        .map(|acl| acl_contents(acl).map(|c| c.description.unwrap_or_default()))
        .collect()
}

/// Points the identity preference `name` at `identity`. Only ever called with names that are
/// not URLs (wildcards): a URL-form name would be stored as `"<url> (<the agent's app id>)"`
/// (`SecIdentityCopyPerAppNameForName`, `OSX/libsecurity_keychain/lib/SecIdentity.cpp`), which
/// no browser looks up. On Security-61901 this also copies the certificate into the login
/// keychain (`SecIdentityImportToFileBackedKeychain`); the store removes those copies.
pub(super) fn set_preferred_identity(identity: &SecIdentity, name: &str) -> Result<(), SysError> {
    let name = CFString::new(name);
    // SAFETY: a valid identity, a valid name, and no key usage restriction.
    check("SecIdentitySetPreferred", unsafe {
        SecIdentitySetPreferred(identity.as_concrete_TypeRef(), name.as_concrete_TypeRef(), ptr::null())
    })
}

/// One identity preference item: a generic password of type `iprf` whose service is the name
/// a lookup matches exactly, and whose generic attribute is a persistent reference to the
/// certificate (`SecIdentitySetPreference`, `SecIdentity.cpp`).
pub(super) struct PreferenceItem {
    /// The name (service) exactly as stored, app-id suffix included.
    pub name: String,
    /// The DER of the certificate it points at; `None` when that certificate is gone.
    pub certificate: Option<Vec<u8>>,
    item: SecKeychainItem,
}

impl PreferenceItem {
    /// Deletes the item.
    pub(super) fn delete(&self) -> Result<(), SysError> {
        // SAFETY: `item` is a valid keychain item reference kept alive by `self`.
        check("SecKeychainItemDelete", unsafe { SecKeychainItemDelete(self.item.as_concrete_TypeRef()) })
    }
}

fn certificate_of(persistent_ref: &CFData) -> Option<Vec<u8>> {
    let mut item: SecKeychainItemRef = ptr::null_mut();
    // SAFETY: `persistent_ref` is a valid CFData; `item` receives a +1 reference on success.
    let status = unsafe {
        SecKeychainItemCopyFromPersistentReference(persistent_ref.as_concrete_TypeRef(), &mut item)
    };
    if status != errSecSuccess || item.is_null() {
        return None;
    }
    // SAFETY: success means `item` is an owned CF object; downcast checks its type.
    let item = unsafe { CFType::wrap_under_create_rule(item as CFTypeRef) };
    item.downcast::<SecCertificate>().map(|c| c.to_der())
}

/// Every identity preference item in the user's search list, read as stored: no app-id
/// rewriting (which `SecIdentityCopyPreferred` applies to URL-form names with the caller's own
/// id), so the agent sees the names Safari's lookup would match.
pub(super) fn identity_preferences() -> Result<Vec<PreferenceItem>, SysError> {
    let k = keys();
    let pairs = vec![
        (cf_key(k.class), cf_key(k.class_generic_password).as_CFType()),
        (cf_key(k.item_type), CFNumber::from(IDENTITY_PREFERENCE_TYPE).as_CFType()),
    ];
    let (value_ref, service, generic) = (cf_key(k.value_ref), cf_key(k.service), cf_key(k.generic));
    Ok(copy_matching(pairs)?
        .iter()
        .filter_map(|d| {
            let item = d.find(&value_ref)?.downcast::<SecKeychainItem>()?;
            let name = d.find(&service)?.downcast::<CFString>()?.to_string();
            let certificate =
                d.find(&generic).and_then(|g| g.downcast::<CFData>()).and_then(|g| certificate_of(&g));
            Some(PreferenceItem { name, certificate, item })
        })
        .collect())
}

/// Is `status` "not found"?
pub(super) fn is_not_found(error: &SysError) -> bool {
    error.status() == Some(errSecItemNotFound)
}

// ---- CFPreferences ----

fn to_plist(value: CFPropertyListRef) -> Option<plist::Value> {
    if value.is_null() {
        return None;
    }
    // SAFETY: a non-NULL CFPreferences result is an owned property list.
    let value = unsafe { CFPropertyList::wrap_under_create_rule(value) };
    let data = create_data(value.as_concrete_TypeRef(), kCFPropertyListXMLFormat_v1_0).ok()?;
    plist::Value::from_reader_xml(data.bytes()).ok()
}

fn from_plist(value: &plist::Value) -> Result<CFPropertyList, SysError> {
    let mut xml = Vec::new();
    value.to_writer_xml(&mut xml).map_err(|e| SysError::Failed { call: "plist", message: e.to_string() })?;
    let (list, _format) =
        create_with_data(CFData::from_buffer(&xml), kCFPropertyListImmutable).map_err(|e| {
            SysError::Failed { call: "CFPropertyListCreateWithData", message: e.description().to_string() }
        })?;
    // SAFETY: `create_with_data` returns an owned, non-NULL property list on success.
    Ok(unsafe { CFPropertyList::wrap_under_create_rule(list) })
}

/// The effective value of `key` for `app`: managed (forced) values first, then the user's,
/// then any-user ones, as the app itself would read it.
pub(super) fn app_value(key: &str, app: &str) -> Option<plist::Value> {
    let (key, app) = (CFString::new(key), CFString::new(app));
    // SAFETY: valid CFStrings; the result is +1 or NULL.
    to_plist(unsafe { CFPreferencesCopyAppValue(key.as_concrete_TypeRef(), app.as_concrete_TypeRef()) })
}

/// Whether `key` of `app` is forced by a configuration profile.
pub(super) fn app_value_is_forced(key: &str, app: &str) -> bool {
    let (key, app) = (CFString::new(key), CFString::new(app));
    // SAFETY: valid CFStrings.
    unsafe { CFPreferencesAppValueIsForced(key.as_concrete_TypeRef(), app.as_concrete_TypeRef()) != 0 }
}

/// The current user's own value of `key` for `app` (any host), without managed values.
pub(super) fn user_value(key: &str, app: &str) -> Option<plist::Value> {
    let (key, app) = (CFString::new(key), CFString::new(app));
    // SAFETY: valid CFStrings and framework constants; the result is +1 or NULL.
    to_plist(unsafe {
        CFPreferencesCopyValue(
            key.as_concrete_TypeRef(),
            app.as_concrete_TypeRef(),
            kCFPreferencesCurrentUser,
            kCFPreferencesAnyHost,
        )
    })
}

/// Sets (or with `None` removes) the current user's value of `key` for `app` and writes it
/// to disk.
pub(super) fn set_user_value(key: &str, app: &str, value: Option<&plist::Value>) -> Result<(), SysError> {
    let value = value.map(from_plist).transpose()?;
    let (key, app) = (CFString::new(key), CFString::new(app));
    let raw = value.as_ref().map_or(ptr::null(), |v| v.as_concrete_TypeRef());
    // SAFETY: valid CFStrings, a valid property list or NULL (NULL removes the key), framework
    // constants for the user and host.
    let synced = unsafe {
        CFPreferencesSetValue(
            key.as_concrete_TypeRef(),
            raw,
            app.as_concrete_TypeRef(),
            kCFPreferencesCurrentUser,
            kCFPreferencesAnyHost,
        );
        CFPreferencesSynchronize(app.as_concrete_TypeRef(), kCFPreferencesCurrentUser, kCFPreferencesAnyHost)
    };
    if synced == 0 {
        return Err(SysError::Failed {
            call: "CFPreferencesSynchronize",
            message: "the preferences could not be written".to_owned(),
        });
    }
    Ok(())
}
