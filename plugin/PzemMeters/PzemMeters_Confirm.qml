/*
** venus-pzem: "are you sure?" before a request that changes a meter or the adapter.
** Open with Global.dialogLayer.open(component, { title, description, confirmedAction: function })
*/

import QtQuick
import QtQuick.Templates as T
import Victron.VenusOS

ModalWarningDialog {
	id: root

	property var confirmedAction

	dialogDoneOptions: VenusOS.ModalDialog_DoneOptions_OkAndCancel
	onClosed: {
		if (result === T.Dialog.Accepted && root.confirmedAction) {
			root.confirmedAction()
		}
	}
}
