//! The Security.framework and CoreFoundation calls that `security-framework` does not wrap,
//! behind safe functions; the only module of the agent with `unsafe`.
//!
//! What it declares itself: key generation attributes (`kSecAttrIsExtractable`,
//! `kSecAttrIsSensitive`, `kSecAttrAccess`), access objects and ACL entries (`SecAccessCreate`,
//! `SecTrustedApplicationCreateFromPath`, `SecAccessCopyMatchingACLList`, `SecACLCopyContents`,
//! `SecACLSetContents`), the partition-list change `SecKeychainItemSetAccessWithPassword`
//! (exported by Security.framework and used by `security set-key-partition-list`, but absent
//! from the public headers, so it is looked up with `dlsym` at run time instead of linked),
//! identity preferences (`SecIdentitySetPreferred`, `SecIdentityCopyPreferred`), keychain
//! deletion, and CFPreferences. Property-list values cross the boundary as XML, converted to
//! and from [`plist::Value`], so no CF type leaks into the rest of the backend.
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
use security_framework::os::macos::keychain::SecKeychain;
use security_framework_sys::base::{
    SecAccessRef, SecIdentityRef, SecKeyRef, SecKeychainItemRef, SecKeychainRef, errSecItemNotFound,
    errSecSuccess,
};
use security_framework_sys::item::{
    kSecAttrAccount, kSecAttrIsPermanent, kSecAttrKeySizeInBits, kSecAttrKeyType,
    kSecAttrKeyTypeECSECPrimeRandom, kSecAttrLabel, kSecAttrService, kSecClass, kSecClassGenericPassword,
    kSecPrivateKeyAttrs, kSecPublicKeyAttrs, kSecUseKeychain, kSecValueData,
};
use security_framework_sys::key::SecKeyCreateRandomKey;
use security_framework_sys::keychain_item::SecItemAdd;

type SecTrustedApplicationRef = *mut c_void;
type SecACLRef = *mut c_void;
type SecKeychainPromptSelector = u16;
type SetAccessWithPassword =
    unsafe extern "C" fn(SecKeychainItemRef, SecAccessRef, u32, *const c_void) -> OSStatus;

#[link(name = "Security", kind = "framework")]
unsafe extern "C" {
    static kSecAttrIsExtractable: CFStringRef;
    static kSecAttrIsSensitive: CFStringRef;
    static kSecAttrAccess: CFStringRef;
    static kSecACLAuthorizationPartitionID: CFStringRef;
    static kSecACLAuthorizationSign: CFStringRef;
    static kSecACLAuthorizationAny: CFStringRef;
    static kSecACLAuthorizationChangeACL: CFStringRef;

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
    fn SecIdentityCopyPreferred(
        name: CFStringRef,
        key_usage: CFArrayRef,
        valid_issuers: CFArrayRef,
    ) -> SecIdentityRef;
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
    is_sensitive: CFStringRef,
    key_type: CFStringRef,
    key_type_ec: CFStringRef,
    key_size: CFStringRef,
    private_attrs: CFStringRef,
    public_attrs: CFStringRef,
    partition_id: CFStringRef,
    sign: CFStringRef,
    any: CFStringRef,
    change_acl: CFStringRef,
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
            is_sensitive: kSecAttrIsSensitive,
            key_type: kSecAttrKeyType,
            key_type_ec: kSecAttrKeyTypeECSECPrimeRandom,
            key_size: kSecAttrKeySizeInBits,
            private_attrs: kSecPrivateKeyAttrs,
            public_attrs: kSecPublicKeyAttrs,
            partition_id: kSecACLAuthorizationPartitionID,
            sign: kSecACLAuthorizationSign,
            any: kSecACLAuthorizationAny,
            change_acl: kSecACLAuthorizationChangeACL,
        }
    }
}

/// An access object whose trusted-application list is only the calling executable, as the
/// "allow only this app" default of Keychain Access. Used for the keychain password item.
pub(super) fn access_for_this_app(descriptor: &str) -> Result<SecAccess, SysError> {
    let mut app: SecTrustedApplicationRef = ptr::null_mut();
    // SAFETY: a NULL path means "the calling application"; `app` receives a +1 reference.
    check("SecTrustedApplicationCreateFromPath", unsafe {
        SecTrustedApplicationCreateFromPath(ptr::null(), &mut app)
    })?;
    // SAFETY: `app` is a valid, owned CF object returned just above.
    let app = unsafe { CFType::wrap_under_create_rule(app as CFTypeRef) };
    let trusted = CFArray::from_CFTypes(&[app]);
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

/// Generates an ECDSA P-256 key pair inside `keychain`: permanent, not extractable, sensitive,
/// labelled `label`. The private key is returned; its bytes never exist outside the keychain.
pub(super) fn generate_p256_key(keychain: &SecKeychain, label: &str) -> Result<SecKey, SysError> {
    let k = keys();
    let yes = CFBoolean::true_value().as_CFType();
    let no = CFBoolean::false_value().as_CFType();
    let private_attrs = CFDictionary::from_CFType_pairs(&[
        (cf_key(k.is_permanent), yes.clone()),
        // The two attributes security-framework-sys does not declare: the private key can
        // neither be exported in the clear nor wrapped out of the keychain.
        (cf_key(k.is_extractable), no),
        (cf_key(k.is_sensitive), yes.clone()),
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

/// Sets a private key's partition list to the hex `description` (see
/// [`super::allowlist::encode_description`]) and lets any application ask it to sign, the
/// partition list being what restricts which ones; authorised with the keychain password,
/// exactly as `security set-key-partition-list -S ... -k <password>` does but without the
/// password ever reaching an argument vector.
pub(super) fn set_key_partitions(
    key: &SecKey,
    keychain_password: &[u8],
    description: &str,
) -> Result<(), SysError> {
    let item = key.as_concrete_TypeRef() as SecKeychainItemRef;
    let access = copy_access(item)?;
    let k = keys();
    let (partition_tag, sign_tag) = (k.partition_id, k.sign);
    let partition_acls = matching_acls(&access, partition_tag);
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
    // Only the entry that grants signing (with decrypt, derive and the like) is opened to any
    // application; an entry that also grants everything (`Any`) or changing the ACL itself
    // stays as it is.
    let (any, change_acl) = (cf_key(k.any), cf_key(k.change_acl));
    for acl in &matching_acls(&access, sign_tag) {
        let tags = acl_authorizations(acl);
        if !tags.contains(&cf_key(sign_tag)) || tags.contains(&any) || tags.contains(&change_acl) {
            continue;
        }
        let contents = acl_contents(acl)?;
        let keep = contents.description.unwrap_or_default();
        set_acl_contents(acl, None, &keep, contents.selector)?;
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

/// The descriptions of a key's partition-list ACL entries (hex plists).
pub(super) fn key_partition_descriptions(key: &SecKey) -> Result<Vec<String>, SysError> {
    let access = copy_access(key.as_concrete_TypeRef() as SecKeychainItemRef)?;
    matching_acls(&access, keys().partition_id)
        .iter()
        .map(|acl| acl_contents(acl).map(|c| c.description.unwrap_or_default()))
        .collect()
}

/// Points the identity preference `name` at `identity`, or deletes it with `None`.
pub(super) fn set_preferred_identity(identity: Option<&SecIdentity>, name: &str) -> Result<(), SysError> {
    let name = CFString::new(name);
    let identity = identity.map_or(ptr::null_mut(), |i| i.as_concrete_TypeRef());
    // SAFETY: valid or NULL identity (NULL deletes the preference), a valid name, and no key
    // usage restriction.
    check("SecIdentitySetPreferred", unsafe {
        SecIdentitySetPreferred(identity, name.as_concrete_TypeRef(), ptr::null())
    })
}

/// The identity the preference `name` points at; `None` when there is no preference or its
/// identity no longer exists.
pub(super) fn preferred_identity(name: &str) -> Option<SecIdentity> {
    let name = CFString::new(name);
    // SAFETY: a valid name and no usage or issuer filters; the result is +1 or NULL.
    let identity = unsafe { SecIdentityCopyPreferred(name.as_concrete_TypeRef(), ptr::null(), ptr::null()) };
    // SAFETY: a non-NULL result is an owned SecIdentityRef.
    (!identity.is_null()).then(|| unsafe { SecIdentity::wrap_under_create_rule(identity) })
}

/// Whether `identity`'s certificate is `certificate`.
pub(super) fn identity_has_certificate(identity: &SecIdentity, certificate: &SecCertificate) -> bool {
    identity.certificate().is_ok_and(|c| c.to_der() == certificate.to_der())
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
